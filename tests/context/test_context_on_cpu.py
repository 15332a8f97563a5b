"""Context policies (pure): what turn t sees under memory (k = 1, 3, all), mem1 and full; memory token budget."""

import dataclasses

import pytest

from mempo_verl.config import ContextConfig
from mempo_verl.context import (
    POLICY_LAYOUTS,
    ContextPolicy,
    EpisodeContext,
    render_questions,
    truncate_to_token_budget,
    turns_left_hint,
)
from mempo_verl.protocol import TagSet, ToolCall
from mempo_verl.testing.turns import turn_record
from mempo_verl.turns import TurnRecord

EPISODE = EpisodeContext(task_prompt="TASK", question_text="Q?", max_turns=5)


def _record(text: str, memory: str | None, think: str | None, tool_call: ToolCall | None, observation: str | None):
    """A committed turn with what context policies read (the memory is shown as written: no budget cut)."""
    return turn_record(
        text=text, memory=memory, memory_in_context=memory, think=think, tool_call=tool_call, observation=observation
    )


def _turn(i: int) -> TurnRecord:
    return _record(
        text=f"<mem>m{i}</mem>\n<think>t{i}</think>\n<tool_call>call{i}</tool_call>",
        memory=f"m{i}",
        think=f"t{i}",
        tool_call=ToolCall("search", {"query": f"q{i}"}),
        observation=f"o{i}",
    )


HISTORY = [_turn(0), _turn(1), _turn(2)]


def _user(messages):
    assert [m["role"] for m in messages] == ["system", "user"]  # memory contexts: two messages, always
    assert messages[0]["content"] == "TASK"
    return messages[1]["content"]


def test_render_questions_one_and_many():
    assert render_questions(["What?"]) == "What?"
    # k objectives are numbered in answer order (MEM1 layout, same as the data builder)
    assert render_questions(["A?", "B?"]) == "Question 1: A?\nQuestion 2: B?"
    with pytest.raises(ValueError):
        render_questions([])


def test_first_turn_is_questions_and_hint():
    user = _user(ContextPolicy(ContextConfig()).messages(EPISODE, []))
    # 5 turns left, this one included
    assert user == "Q?\n\nTurns left: 5 (this one included)."


def test_memory_k1_keeps_only_the_last_memory_and_information():
    user = _user(ContextPolicy(ContextConfig()).messages(EPISODE, HISTORY))
    assert user == "Q?\n\nTurns left: 2 (this one included).\n\n<mem>m2</mem>\n<information>o2</information>"
    assert "m1" not in user and "o1" not in user  # turn 1 is gone: the memory must carry it
    assert "<think>" not in user and "<tool_call>" not in user  # dropped by default


def test_memory_k3_and_all_keep_more_turns_in_order():
    k3 = _user(ContextPolicy(ContextConfig(retain_turns=3)).messages(EPISODE, HISTORY))
    assert k3.index("m0") < k3.index("o0") < k3.index("m1") < k3.index("m2")
    k2 = _user(ContextPolicy(ContextConfig(retain_turns=2)).messages(EPISODE, HISTORY))
    assert "m0" not in k2 and "m1" in k2 and "m2" in k2
    everything = _user(ContextPolicy(ContextConfig(retain_turns="all")).messages(EPISODE, HISTORY))
    assert everything == k3  # three turns of history: "all" and k = 3 coincide


def test_keep_think_and_keep_call_render_with_protocol_helpers():
    user = _user(ContextPolicy(ContextConfig(keep_think=True, keep_call=True)).messages(EPISODE, HISTORY))
    block = user.split("\n\n")[-1]
    assert block == (
        '<mem>m2</mem>\n<think>t2</think>\n<tool_call>{"name": "search", "arguments": {"query": "q2"}}</tool_call>\n'
        "<information>o2</information>"
    )


def test_mem1_is_memory_k1_plus_the_last_call():
    mem1 = _user(ContextPolicy(ContextConfig(policy="mem1", retain_turns=3)).messages(EPISODE, HISTORY))
    memory = _user(ContextPolicy(ContextConfig()).messages(EPISODE, HISTORY))
    call = '<tool_call>{"name": "search", "arguments": {"query": "q2"}}</tool_call>\n'
    # the only difference: MEM1 keeps the latest query next to its information (retain_turns is ignored)
    assert mem1 == memory.replace("<information>o2", call + "<information>o2")


def test_full_appends_every_turn_and_is_append_only():
    policy = ContextPolicy(ContextConfig(policy="full"))
    assert policy.layout == "sequence"  # one growing sequence: the agent loop appends, one segment
    previous = policy.messages(EPISODE, [])
    for t in range(1, len(HISTORY) + 1):
        messages = policy.messages(EPISODE, HISTORY[:t])
        # turn t's messages = turn t-1's + [assistant, user]: the agent loop appends tokens, never re-renders
        assert messages[: len(previous)] == previous
        assert messages[len(previous)] == {"role": "assistant", "content": HISTORY[t - 1].text}
        assert messages[-1] == {
            "role": "user",
            "content": f"<information>o{t - 1}</information>\n\nTurns left: {5 - t} (this one included).",
        }
        previous = messages


def test_full_refuses_a_turn_without_observation_before_another():
    silent = _record("<mem>m</mem><answer>x</answer>", memory="m", think=None, tool_call=None, observation=None)
    with pytest.raises(ValueError, match="no observation"):
        ContextPolicy(ContextConfig(policy="full")).messages(EPISODE, [silent])


def test_each_policy_names_its_segment_layout():
    # the rewriting policies lay out one row per turn; full's append-only contexts make one sequence
    assert POLICY_LAYOUTS == {"memory": "per_turn", "mem1": "per_turn", "full": "sequence"}
    assert ContextPolicy(ContextConfig(policy="mem1")).layout == "per_turn"


def test_retained_turn_shows_the_memory_later_contexts_read():
    # a memory cut to its token budget: the context shows the cut (memory_in_context), not the written memory
    cut = dataclasses.replace(_turn(0), memory="m0 and much more", memory_in_context="m0")
    assert _user(ContextPolicy(ContextConfig()).messages(EPISODE, [cut])).endswith(
        "<mem>m0</mem>\n<information>o0</information>"
    )


def test_hint_off_and_custom_template_and_custom_tags():
    config = ContextConfig(turns_left_hint=False)
    assert turns_left_hint(config, 3) is None
    assert _user(ContextPolicy(config).messages(EPISODE, [])) == "Q?"
    template = ContextConfig(turns_left_template="[{turns_left} left]")
    assert turns_left_hint(template, 3) == "[3 left]"
    tags = TagSet(mem="memory", information="obs")
    user = _user(ContextPolicy(ContextConfig(), tags).messages(EPISODE, HISTORY))
    assert user.endswith("<memory>m2</memory>\n<obs>o2</obs>")


def test_no_context_past_max_turns():
    with pytest.raises(ValueError, match="max_turns"):
        ContextPolicy(ContextConfig()).messages(EpisodeContext("T", "Q", max_turns=2), HISTORY[:2])


def test_memory_without_mem_block_shows_only_information():
    no_mem = _record(text="x", memory=None, think=None, tool_call=None, observation="o")
    user = _user(ContextPolicy(ContextConfig()).messages(EPISODE, [no_mem]))
    assert user.endswith("Turns left: 4 (this one included).\n\n<information>o</information>")


def test_truncate_to_token_budget(tokenizer):
    text = "Paris is the capital of France; 日本語 café 🎉 and more words here"
    assert truncate_to_token_budget(tokenizer, text, None) == (text, False)
    n = len(tokenizer.encode(text, add_special_tokens=False))
    assert truncate_to_token_budget(tokenizer, text, n) == (text, False)  # exactly at budget: untouched
    for budget in range(1, n):
        cut, truncated = truncate_to_token_budget(tokenizer, text, budget)
        assert truncated and text.startswith(cut)
        assert "\ufffd" not in cut  # never splits a multi-byte character
        assert len(tokenizer.encode(cut, add_special_tokens=False)) <= budget
