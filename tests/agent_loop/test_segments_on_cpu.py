"""Segment metadata: the <mem> token span on real Qwen2.5 ids (merges across tags, split multi-byte characters),
undecodable ids, and the extra_fields round trip."""

import json
import random

import pytest
from transformers.convert_slow_tokenizer import bytes_to_unicode

from mempo_verl.protocol import ToolCall, parse_turn
from mempo_verl.segments import (
    EXTRA_FIELDS_KEY,
    EpisodeSummary,
    Segment,
    decode_ids,
    memory_token_span,
    undecodable_ids,
)
from mempo_verl.turns import TurnRecord

TURNS = [
    "<mem>Paris is the capital.</mem>\n<think>ok</think>\n<answer>Paris</answer>",
    "<mem>日本語 café 🎉 Ångström</mem>\n<think>x</think>\n<answer>y</answer>",
    '<mem>The answer"</mem><think>t</think><answer>a</answer>',  # '"</' and '><' merge across tag boundaries
    "<mem>5.</mem>\n<think>t</think><answer>a</answer>",
]


def _check_span(tokenizer, ids):
    """The span holds every token overlapping the block and nothing else (minimal on both sides)."""
    text = decode_ids(tokenizer, ids)
    turn = parse_turn(text)
    a, b = turn.spans["mem"]
    block = text[a:b]
    start, end = memory_token_span(tokenizer, ids, (a, b))
    assert block in decode_ids(tokenizer, ids[start:end])
    assert block not in decode_ids(tokenizer, ids[start + 1 : end])  # the first token carries block bytes
    assert block not in decode_ids(tokenizer, ids[start : end - 1])  # so does the last
    return start, end


@pytest.mark.parametrize("text", TURNS)
def test_span_on_canonical_ids(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    start, end = _check_span(tokenizer, ids)
    assert start == 0  # the block opens the turn


def test_span_with_merges_across_tag_boundaries(tokenizer):
    ids = tokenizer.encode("<mem>Paris is the capital.</mem>\n<think>ok</think>", add_special_tokens=False)
    pieces = [tokenizer.decode([i]) for i in ids]
    assert ".</" in pieces and ">\n" in pieces  # Qwen2.5 merges the tag edges with their neighbours
    start, end = _check_span(tokenizer, ids)
    # the straddling ">\n" token is inside the span: the span decodes to the block plus that newline
    assert decode_ids(tokenizer, ids[start:end]) == "<mem>Paris is the capital.</mem>\n"


def _byte_ids(tokenizer, text):
    """One token per UTF-8 byte: a segmentation a model can produce, splitting every multi-byte character."""
    byte_to_symbol = bytes_to_unicode()
    return tokenizer.convert_tokens_to_ids([byte_to_symbol[b] for b in text.encode("utf-8")])


def test_span_on_byte_level_ids_splitting_multibyte_characters(tokenizer):
    text = "🎉<mem>日本語 🎉</mem>é"
    ids = _byte_ids(tokenizer, text)
    assert decode_ids(tokenizer, ids) == text
    a, b = text.index("<mem>"), text.index("</mem>") + len("</mem>")
    start, end = memory_token_span(tokenizer, ids, (a, b))
    # exactly the block's bytes: 4 bytes of the leading emoji before it, the 2 bytes of é after it
    assert (start, end) == (4, len(ids) - 2)
    assert decode_ids(tokenizer, ids[start:end]) == text[a:b]


def test_span_of_a_character_split_across_tokens_inside_the_text(tokenizer):
    # "a🎉b" with the emoji as four byte tokens
    ids = tokenizer.convert_tokens_to_ids(["a"]) + _byte_ids(tokenizer, "🎉") + tokenizer.convert_tokens_to_ids(["b"])
    assert memory_token_span(tokenizer, ids, (1, 2)) == (1, 5)  # the emoji is four byte tokens
    assert memory_token_span(tokenizer, ids, (0, 2)) == (0, 5)
    assert memory_token_span(tokenizer, ids, (2, 3)) == (5, 6)


def test_span_on_random_segmentations(tokenizer):
    """Any segmentation into whole-character pieces, each tokenized alone: the span is exact and minimal."""
    rng = random.Random(0)
    text = "<mem>Née à Zürich — 東京 🎉 fact: x=1.</mem>\n<think>ok</think>\n<answer>東京</answer>"
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), 12))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        ids = [i for piece in pieces for i in tokenizer.encode(piece, add_special_tokens=False)]
        _check_span(tokenizer, ids)


def test_span_rejects_bad_char_spans(tokenizer):
    ids = tokenizer.encode("<mem>x</mem>", add_special_tokens=False)
    for span in [(3, 3), (-1, 2), (0, 100)]:
        with pytest.raises(ValueError, match="char_span"):
            memory_token_span(tokenizer, ids, span)


def test_undecodable_ids(tokenizer):
    vocab = len(tokenizer)
    assert tokenizer.decode([vocab + 35]) == ""  # why the check exists: the fast tokenizer says nothing
    assert undecodable_ids(tokenizer, [1, vocab - 1, vocab, -3]) == [vocab, -3]


def _record(i: int, **overrides) -> TurnRecord:
    values = dict(
        turn_index=i,
        text=f"<mem>m{i}</mem>",
        memory=f"m{i}",
        memory_in_context=f"m{i}",
        memory_truncated=False,
        think="t",
        action="tool_call",
        tool_call=ToolCall("search", {"query": "q", "k": [1, 2]}),
        answer=None,
        observation=f"o{i}",
        observation_ok=True,
        observation_error=None,
        observation_metrics={"latency_s": 0.5},
        mem_span=(0, 5),
        response_span=(0, 9),
        prompt_tokens=100,
        completion_tokens=9,
        format_errors=(),
    )
    values.update(overrides)
    return TurnRecord(**values)


def _segment(is_last: bool) -> Segment:
    last = dict(
        termination="answer",
        final_answer="Paris",
        format_valid=True,
        episode=EpisodeSummary(num_turns=2, total_tokens=218, peak_tokens=109, env_failures=0, memory_truncations=0),
    )
    return Segment(
        uid="u1",
        session_id=3,
        segment_index=1 if is_last else 0,
        policy="memory",
        layout="per_turn",
        turns=(_record(1, action="answer", tool_call=None, answer="Paris", observation=None),)
        if is_last
        else (_record(0),),
        task_prompt="TASK",
        questions=("Q?",),
        question_text="Q?",
        gold_answer="Paris",
        reward_mode="all_em",
        is_last=is_last,
        **(last if is_last else {}),
    )


@pytest.mark.parametrize("is_last", [False, True])
def test_extra_fields_round_trip_through_json(is_last):
    segment = _segment(is_last)
    fields = segment.to_extra_fields()
    assert json.loads(json.dumps(fields)) == fields  # plain JSON-able values
    assert Segment.from_extra_fields(json.loads(json.dumps(fields))) == segment
    assert Segment.from_extra_fields(fields[EXTRA_FIELDS_KEY]) == segment
    # the tool call is stored as verl's JSON object and read back as the parser's ToolCall
    stored = fields[EXTRA_FIELDS_KEY]["turns"][0]["tool_call"]
    assert stored == (None if is_last else {"name": "search", "arguments": {"query": "q", "k": [1, 2]}})
    # the reward contract sits flat on the last segment only (rewards.compute_score reads it)
    reward_keys = {"final_answer", "format_valid", "reward_mode"}
    assert (reward_keys <= set(fields)) is is_last


def test_numpy_values_are_accepted():
    np = pytest.importorskip("numpy")
    fields = _segment(True).to_extra_fields()
    inner = dict(fields[EXTRA_FIELDS_KEY])
    inner["questions"] = np.array(inner["questions"], dtype=object)
    assert Segment.from_extra_fields({EXTRA_FIELDS_KEY: inner}) == _segment(True)


def test_segment_validation():
    with pytest.raises(ValueError, match="at least one turn"):
        Segment(None, None, 0, "memory", "per_turn", (), "T", ("Q",), "Q", None, "all_em", is_last=False)
    with pytest.raises(ValueError, match="last segment needs"):
        Segment(None, None, 0, "memory", "per_turn", (_record(0),), "T", ("Q",), "Q", None, "all_em", is_last=True)
    # a per-turn row holds exactly one turn; the layout is a closed choice
    with pytest.raises(ValueError, match="per_turn segment holds one turn"):
        Segment(None, None, 0, "memory", "per_turn", (_record(0), _record(1)), "T", ("Q",), "Q", None, "all_em", False)
    with pytest.raises(ValueError, match="layout='rows'"):
        Segment(None, None, 0, "memory", "rows", (_record(0),), "T", ("Q",), "Q", None, "all_em", is_last=False)
    # a turn rebuilt from malformed JSON is refused, not rendered silently wrong
    with pytest.raises(TypeError, match="tool_call must be a ToolCall"):
        _record(0, tool_call={"name": "search", "arguments": {}})
    with pytest.raises(TypeError, match="observation must be a string"):
        _record(0, observation=["o"])
    assert _record(0).memory_tokens == 5 and _record(0, mem_span=None).memory_tokens == 0
