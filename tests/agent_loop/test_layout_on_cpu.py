"""Segment layouts (mempo_verl/layout.py): prompt ids, budgets, appending and rows, over a hand-made token builder.

The real Continuous Token builder runs in test_agent_loop_on_cpu.py; here one token per character of a message's
content makes every expectation countable by hand.
"""

from types import SimpleNamespace

from mempo_verl.context import POLICY_LAYOUTS
from mempo_verl.layout import LAYOUTS, PerTurnLayout, SequenceLayout


class CharTokens:
    """verl's Continuous Token builder in miniature: a message is one token (id 1) per character of its content;
    a merge appends the new last message's tokens (id 2) and aligns the metadata (mask 0, log-prob 0.0)."""

    def build_initial_tokens(self, messages, tools=None):
        return [1] * sum(len(m["content"]) for m in messages)

    def merge_context_tokens(self, previous, messages, token_ids, tools=None):
        added = len(messages[-1]["content"])
        return SimpleNamespace(token_ids=list(token_ids) + [2] * added, added=added)

    def align_response_metadata(self, merge, mask, logprobs):
        return mask + [0] * merge.added, (logprobs + [0.0] * merge.added if logprobs is not None else None)


def _messages(*contents):
    return [{"role": "user", "content": c} for c in contents]


def test_each_policy_layout_has_a_class():
    assert {LAYOUTS[name].name for name in POLICY_LAYOUTS.values()} == {"per_turn", "sequence"}


def test_per_turn_renders_each_prompt_and_makes_one_row_per_turn():
    layout = PerTurnLayout(CharTokens(), tools=[], prompt_length=5, response_length=8)
    first = layout.next_prompt(_messages("abc"))
    assert (first.prompt_ids, first.response_start, first.max_tokens, first.fits) == ([1, 1, 1], 0, 8, True)
    layout.append(first, [10, 11], [-0.5, -0.25])
    second = layout.next_prompt(_messages("abcd"))  # rendered afresh: 4 tokens, not 3 + 2 + 4
    layout.append(second, [12], None)
    assert layout.next_prompt(_messages("abcdef")).fits is False  # 6 > prompt_length 5
    rows = layout.rows()
    assert [r.turns for r in rows] == [(0,), (1,)]
    assert rows[0].prompt_ids == [1, 1, 1] and rows[0].response_ids == [10, 11] and rows[0].response_mask == [1, 1]
    assert rows[0].response_logprobs == [-0.5, -0.25] and rows[1].response_logprobs is None


def test_sequence_appends_and_keeps_only_contexts_that_fit():
    layout = SequenceLayout(CharTokens(), tools=[], prompt_length=3, response_length=8)
    first = layout.next_prompt(_messages("abc"))
    assert (first.prompt_ids, first.response_start, first.max_tokens, first.fits) == ([1, 1, 1], 0, 8, True)
    layout.append(first, [10, 11], [-0.5, -0.25])
    # turn 1: sequence so far (3 + 2) + the new message's 2 tokens; 4 response ids precede its generation
    second = layout.next_prompt(_messages("abc", "xy"))
    assert (second.prompt_ids, second.response_start, second.max_tokens) == ([1, 1, 1, 10, 11, 2, 2], 4, 4)
    layout.append(second, [12], [-1.0])
    # turn 2 would need 5 + 4 = 9 response ids >= response_length 8: it does not fit and nothing of it is kept
    assert layout.next_prompt(_messages("abc", "xy", "long")).fits is False
    (row,) = layout.rows()
    assert row.turns == (0, 1) and row.prompt_ids == [1, 1, 1]
    assert row.response_ids == [10, 11, 2, 2, 12]
    assert row.response_mask == [1, 1, 0, 0, 1]  # 0 on the context tokens between turns
    assert row.response_logprobs == [-0.5, -0.25, 0.0, 0.0, -1.0]


def test_sequence_without_log_probs_from_one_turn_has_none():
    layout = SequenceLayout(CharTokens(), tools=[], prompt_length=1, response_length=8)
    first = layout.next_prompt(_messages("a"))
    layout.append(first, [10], [-0.5])
    second = layout.next_prompt(_messages("a", "b"))
    layout.append(second, [11], None)  # why: the sequence's log-probs would no longer align
    assert layout.rows()[0].response_logprobs is None


def test_sequence_over_its_first_prompt_keeps_nothing():
    layout = SequenceLayout(CharTokens(), tools=[], prompt_length=2, response_length=8)
    assert layout.next_prompt(_messages("abc")).fits is False
    assert layout.rows() == []
