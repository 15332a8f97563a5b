"""Memory credit (MemPO Eq. 4-5): scoring contexts, teacher-forced sequences, geometric-mean P, R^M, LM scoring."""

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from mempo_verl.config import BASELINE_MODES
from mempo_verl.memory_credit import (
    ScoringSequence,
    baseline_scoring_messages,
    build_scoring_sequence,
    collate_scoring_sequences,
    geometric_mean_prob,
    history_scoring_messages,
    memory_credit_from_probabilities,
    memory_reward,
    memory_scoring_messages,
    plan_memory_credit,
    question_scoring_messages,
    score_answer_probability,
    token_logprobs,
)
from mempo_verl.segments import Segment
from mempo_verl.testing.turns import turn_record
from mempo_verl.turns import TurnRecord

LN = math.log
TASK = "Answer the question. Use the search tool."
QUESTION = "What is the capital of France?"
TURN_1 = '<mem>need capital</mem><think>search</think><tool_call>{"name": "search", "arguments": {}}</tool_call>'
TURN_2 = "<mem>France; capital?</mem><think>again</think><tool_call>{}</tool_call>"


def _record(turn: int, text: str, observation: str | None, memory: str | None = None) -> TurnRecord:
    """A committed turn with what memory credit reads: its text, observation and (shown) memory."""
    mem_span = None if memory is None else (0, 3)
    return turn_record(turn, text, observation=observation, memory=memory, memory_in_context=memory, mem_span=mem_span)


# ------------------------------------------------------------------ geometric_mean_prob (Eq. 4)


def _two_by_four():
    logprobs = torch.tensor(
        [
            [0.0, LN(0.5), LN(0.125), LN(0.9)],
            [0.0, LN(0.5), LN(0.25), LN(1.0)],
        ]
    )
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]])
    return logprobs, mask


def test_geometric_mean_prob_hand_case():
    logprobs, mask = _two_by_four()
    p = geometric_mean_prob(logprobs, mask)
    # row 0: (0.5 * 0.125) ** (1/2) = 0.0625 ** 0.5 = 0.25   (the 0.9 at position 3 is outside the mask)
    # row 1: (0.5 * 0.25 * 1.0) ** (1/3) = 0.125 ** (1/3) = 0.5
    torch.testing.assert_close(p, torch.tensor([0.25, 0.5]))


def test_geometric_mean_prob_mask_variations():
    logprobs, mask = _two_by_four()
    # a single masked token: P is that token's probability; row 0 -> 0.125, row 1 -> 1.0
    single = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1]])
    torch.testing.assert_close(geometric_mean_prob(logprobs, single), torch.tensor([0.125, 1.0]))
    # bool and float masks mean the same as 0/1 ints: 0.25 and 0.5 as in the hand case
    torch.testing.assert_close(geometric_mean_prob(logprobs, mask.bool()), torch.tensor([0.25, 0.5]))
    torch.testing.assert_close(geometric_mean_prob(logprobs, mask.float()), torch.tensor([0.25, 0.5]))
    # NaN and -inf outside the mask do not leak (0 * -inf would be NaN): still 0.25 and 0.5
    dirty = logprobs.clone()
    dirty[0, 0], dirty[0, 3] = float("nan"), float("-inf")
    torch.testing.assert_close(geometric_mean_prob(dirty, mask), torch.tensor([0.25, 0.5]))
    # -inf on a gold token is a legitimate probability 0: row 0 -> exp((-inf + ln 0.125) / 2) = 0
    zero = logprobs.clone()
    zero[0, 1] = float("-inf")
    torch.testing.assert_close(geometric_mean_prob(zero, mask), torch.tensor([0.0, 0.5]))
    # float64 input stays float64: row 1 -> 0.5
    assert geometric_mean_prob(logprobs.double(), mask).dtype == torch.float64


def test_geometric_mean_prob_errors():
    logprobs, mask = _two_by_four()
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\)"):
        geometric_mean_prob(logprobs, mask[:, :3])
    with pytest.raises(ValueError, match=r"\(4,\).*\(4,\)"):
        geometric_mean_prob(logprobs[0], mask[0])
    with pytest.raises(ValueError, match=r"selects no token in row\(s\) \[1\]"):
        geometric_mean_prob(logprobs, torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]]))
    nan = logprobs.clone()
    nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"NaN log-prob on answer tokens of row\(s\) \[1\]"):
        geometric_mean_prob(nan, mask)


# ------------------------------------------------------------------ memory_reward (Eq. 5)


def test_memory_reward_hand_case():
    p_memory = torch.tensor([0.5, 0.2])
    p_baseline = torch.tensor([0.25, 0.4])
    # 0.5 - 0.25 = 0.25 (memory helped); 0.2 - 0.4 = -0.2 (memory lost what the history knew)
    torch.testing.assert_close(memory_reward(p_memory, p_baseline), torch.tensor([0.25, -0.2]))
    # baseline="none": a zero baseline leaves P[ans | q, mem] itself
    torch.testing.assert_close(memory_reward(p_memory, torch.zeros(2)), p_memory)


def test_memory_reward_shape_errors():
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        memory_reward(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(2, 1\)"):
        memory_reward(torch.zeros(2, 1), torch.zeros(2, 1))


# ------------------------------------------------------------------ scoring contexts and baselines


def test_memory_and_question_messages():
    assert memory_scoring_messages(TASK, QUESTION, "capital of France = Paris") == [
        {"role": "system", "content": TASK},
        {"role": "user", "content": QUESTION + "\n\n<mem>capital of France = Paris</mem>"},
    ]
    assert question_scoring_messages(TASK, QUESTION) == [
        {"role": "system", "content": TASK},
        {"role": "user", "content": QUESTION},
    ]


def test_history_messages_keep_every_turn_in_full():
    history = [_record(0, TURN_1, "Doc 1: Paris is the capital."), _record(1, TURN_2, None)]
    user = history_scoring_messages(TASK, QUESTION, history)[1]["content"]
    # question, blank line, turn 1 text + its information on the next line, blank line, turn 2 (no observation)
    assert user == (f"{QUESTION}\n\n{TURN_1}\n<information>Doc 1: Paris is the capital.</information>\n\n{TURN_2}")


def test_baseline_modes():
    history = [_record(0, TURN_1, "Doc 1")]
    question_only = question_scoring_messages(TASK, QUESTION)
    assert BASELINE_MODES == ("prefix", "question", "none")
    # prefix: the full history s_<t
    assert baseline_scoring_messages("prefix", TASK, QUESTION, history) == history_scoring_messages(
        TASK, QUESTION, history
    )
    assert (
        "<information>Doc 1</information>" in baseline_scoring_messages("prefix", TASK, QUESTION, history)[1]["content"]
    )
    # question: P[ans | q], the history is ignored
    assert baseline_scoring_messages("question", TASK, QUESTION, history) == question_only
    # none: nothing to score (ε = 0 upstream)
    assert baseline_scoring_messages("none", TASK, QUESTION, history) is None
    # t = 1: the prefix baseline with an empty history is exactly P[ans | q]
    assert baseline_scoring_messages("prefix", TASK, QUESTION, []) == question_only
    with pytest.raises(ValueError, match=r"'full'.*\['prefix', 'question', 'none'\]"):
        baseline_scoring_messages("full", TASK, QUESTION, history)


# ------------------------------------------------------------------ build_scoring_sequence


def _masked_text(tokenizer, seq: ScoringSequence) -> str:
    return tokenizer.decode([i for i, m in zip(seq.input_ids, seq.answer_mask, strict=True) if m])


def test_prompt_ids_are_the_chat_template_ids(tokenizer):
    messages = memory_scoring_messages(TASK, QUESTION, "Paris?")
    seq = build_scoring_sequence(tokenizer, messages, "Paris")
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    assert list(seq.input_ids[: seq.prompt_length]) == expected
    assert seq.prompt_length == len(expected)
    # the response is `<answer>Paris</answer>` tokenized on its own, right after the generation prompt
    assert tokenizer.decode(seq.input_ids[seq.prompt_length :]) == "<answer>Paris</answer>"
    assert tokenizer.decode(seq.input_ids).endswith("<|im_start|>assistant\n<answer>Paris</answer>")
    assert len(seq.answer_mask) == len(seq.input_ids)
    assert not any(seq.answer_mask[: seq.prompt_length])
    # tool schemas reach the template as at rollout (our ChatML lists them in the system turn)
    tools = [{"type": "function", "function": {"name": "search"}}]
    with_tools = build_scoring_sequence(tokenizer, messages, "Paris", tools=tools)
    assert "# Tools" in tokenizer.decode(with_tools.input_ids[: with_tools.prompt_length])


@pytest.mark.parametrize(
    "gold, masked",
    [
        ("Paris", "Paris"),  # `<`, `answer`, `>`, `Paris`, `</`, ...: the gold is exactly one token
        ("1969", "1969"),  # Qwen2 splits digits: `1`, `9`, `6`, `9`
        # BPE merges the open tag's `>` into the gold's first token (`>New`, `>Z`): that token is gold too
        ("New York City; 1969", ">New York City; 1969"),
        ("Zürich", ">Zürich"),
        ("Paris.", "Paris.</"),  # ... and the last gold character into the close tag (`.</`)
    ],
)
def test_answer_mask_covers_exactly_the_gold_tokens(tokenizer, gold, masked):
    seq = build_scoring_sequence(tokenizer, question_scoring_messages(TASK, QUESTION), gold)
    assert _masked_text(tokenizer, seq) == masked
    assert gold in masked
    # the masked tokens are one contiguous run
    ones = [i for i, m in enumerate(seq.answer_mask) if m]
    assert ones == list(range(ones[0], ones[-1] + 1))


def test_tag_boundary_merge_is_not_tokenized_piecewise(tokenizer):
    # Qwen's split regex keeps `>` with the letters after it (`[^\r\n\p{L}\p{N}]?\p{L}+`), so `<answer>New` is
    # `<`, `answer`, `>New`: tokenizing `<answer>` and `New York` separately gives ids the model never writes.
    gold = "New York"
    seq = build_scoring_sequence(tokenizer, question_scoring_messages(TASK, QUESTION), gold)
    response = list(seq.input_ids[seq.prompt_length :])
    assert response == tokenizer("<answer>New York</answer>", add_special_tokens=False).input_ids
    piecewise = [tokenizer(text, add_special_tokens=False).input_ids for text in ("<answer>", gold, "</answer>")]
    assert response != piecewise[0] + piecewise[1] + piecewise[2]
    assert [tokenizer.decode([i]) for i in response] == ["<", "answer", ">New", " York", "</", "answer", ">"]
    # mask: 0 0 [>New York] 0 0 0
    assert seq.answer_mask[seq.prompt_length :] == (0, 0, 1, 1, 0, 0, 0)
    # `>Paris` is one pre-token too, but Qwen2.5 has no `>Paris` merge: `>` stays out of the mask
    paris = build_scoring_sequence(tokenizer, question_scoring_messages(TASK, QUESTION), "Paris")
    assert [tokenizer.decode([i]) for i in paris.input_ids[paris.prompt_length :]][2:4] == [">", "Paris"]


class _NoTokensTokenizer:
    """A fast-tokenizer stub whose response tokenization is empty."""

    is_fast = True

    def apply_chat_template(self, messages, **kwargs):
        return [1, 2]

    def __call__(self, text, **kwargs):
        return SimpleNamespace(input_ids=[], offset_mapping=[])


def test_build_scoring_sequence_errors(tokenizer):
    messages = question_scoring_messages(TASK, QUESTION)
    for empty in ("", "   "):
        with pytest.raises(ValueError, match="gold answer is empty"):
            build_scoring_sequence(tokenizer, messages, empty)
    with pytest.raises(ValueError, match="contains the tag '</answer>'"):
        build_scoring_sequence(tokenizer, messages, "Paris</answer>")
    # a tokenizer that yields no token for the gold (a stub: byte-level BPE always yields one)
    with pytest.raises(ValueError, match="'Paris' produces no tokens"):
        build_scoring_sequence(_NoTokensTokenizer(), messages, "Paris")
    slow = type("Slow", (), {"is_fast": False})
    with pytest.raises(TypeError, match="fast tokenizer"):
        build_scoring_sequence(slow(), messages, "Paris")


def test_scoring_sequence_validation():
    assert ScoringSequence([5, 6, 7], [0, 0, 1], 2).input_ids == (5, 6, 7)  # lists become tuples
    with pytest.raises(ValueError, match="answer_mask has length 2, input_ids 3"):
        ScoringSequence((5, 6, 7), (0, 1), 2)
    with pytest.raises(ValueError, match="prompt_length must be in"):
        ScoringSequence((5, 6, 7), (0, 0, 0), 3)
    with pytest.raises(ValueError, match="marks prompt tokens"):
        ScoringSequence((5, 6, 7), (1, 0, 1), 1)
    with pytest.raises(ValueError, match="0/1"):
        ScoringSequence((5, 6, 7), (0, 0, 2), 1)


# ------------------------------------------------------------------ collate and LM scoring


def test_collate_hand_case():
    a = ScoringSequence((5, 6, 7), (0, 0, 1), 2)
    b = ScoringSequence((8, 9), (0, 1), 1)
    input_ids, attention_mask, answer_mask = collate_scoring_sequences([a, b], pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [8, 9, 0]]  # b right-padded with pad_id 0
    assert attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert answer_mask.tolist() == [[0, 0, 1], [0, 1, 0]]
    with pytest.raises(ValueError, match="no sequences"):
        collate_scoring_sequences([], pad_id=0)


@pytest.fixture(scope="module")
def sequences(tokenizer):
    """Three sequences of different lengths: memory context, question-only, full history."""
    history = [_record(0, TURN_1, "Doc 1: Paris is the capital of France."), _record(1, TURN_2, "Doc 2")]
    contexts = [
        (memory_scoring_messages(TASK, QUESTION, "capital of France = Paris"), "Paris"),
        (question_scoring_messages(TASK, QUESTION), "New York City; 1969"),
        (history_scoring_messages(TASK, QUESTION, history), "Zürich"),
    ]
    built = [build_scoring_sequence(tokenizer, messages, answer) for messages, answer in contexts]
    assert len({len(seq.input_ids) for seq in built}) == 3
    return built


def _reference_logprobs(model, seq: ScoringSequence) -> torch.Tensor:
    """(L,) log p(ids[i] | ids[<i]) from one unpadded forward pass, in a plain loop; position 0 is 0."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seq.input_ids])).logits[0].float()  # (L, V)
    logprobs = torch.log_softmax(logits, dim=-1)
    out = torch.zeros(len(seq.input_ids))
    for i in range(1, len(seq.input_ids)):
        out[i] = logprobs[i - 1, seq.input_ids[i]]
    return out


@pytest.mark.parametrize("batch_size", [2, 16])
def test_token_logprobs_match_unpadded_loop(tiny_model, sequences, batch_size):
    # batch_size 2 < B = 3: two micro-batches, each padded to its own longest sequence
    batched = token_logprobs(tiny_model, sequences, batch_size=batch_size)
    length = max(len(seq.input_ids) for seq in sequences)
    assert batched.shape == (3, length)
    for row, seq in enumerate(sequences):
        n = len(seq.input_ids)
        torch.testing.assert_close(batched[row, :n], _reference_logprobs(tiny_model, seq), atol=1e-5, rtol=0)
        assert (batched[row, n:] == 0).all()  # padding positions hold 0
        assert batched[row, 0] == 0  # nothing predicts the first token


def test_score_answer_probability_matches_loop(tiny_model, sequences):
    p = score_answer_probability(tiny_model, sequences, batch_size=2)
    expected = []
    for seq in sequences:
        reference = _reference_logprobs(tiny_model, seq)
        gold = [reference[i] for i, m in enumerate(seq.answer_mask) if m]
        expected.append(math.exp(sum(gold) / len(gold)))  # Eq. 4: geometric mean of the gold tokens' probs
    torch.testing.assert_close(p, torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert ((p > 0) & (p < 1)).all()
    # permuting the sequences permutes the scores (padding and micro-batching change nothing)
    reordered = score_answer_probability(tiny_model, sequences[::-1], batch_size=1)
    torch.testing.assert_close(reordered, p.flip(0), atol=1e-5, rtol=1e-5)


# --- batch plan: which sequences are scored for which rows --------------------------------------------------------


def _segment_turn(session, turn, memory, text=None, observation="obs", layout="per_turn") -> Segment:
    """One row of a session (its ``uid``): a per-turn segment, as the agent loop writes it."""
    text = text or f"<mem>{memory}</mem><think>t</think><answer>x</answer>"
    return Segment(
        uid=session,
        session_id=0,
        segment_index=turn,
        policy="memory" if layout == "per_turn" else "full",
        layout=layout,
        turns=(_record(turn, text, observation, memory),),
        task_prompt="Task.",
        questions=("Q?",),
        question_text="Q?",
        gold_answer="Paris",
        reward_mode="all_em",
        is_last=False,
    )


def _sessions(rows):
    """Each row's session id (the segment's uid; padding rows get their own)."""
    return [row.uid if row is not None else "padding" for row in rows]


def test_plan_dedups_shared_baselines_and_skips_rows_without_memory(tokenizer):
    rows = [
        _segment_turn("A", 0, "m-a0"),
        _segment_turn("A", 1, "m-a1"),
        _segment_turn("B", 0, "m-b0"),
        _segment_turn("B", 1, None),  # no <mem>: A^T only
        None,  # padding row
    ]
    plan = plan_memory_credit(rows, _sessions(rows), tokenizer, baseline="prefix")
    assert plan.memory_rows == (0, 1, 2)
    # A0 and B0 share ε_1 = P[ans | q]; A1's ε is the history of A0. Unique: mem A0, q, mem A1, hist A0, mem B0
    assert len(plan.sequences) == 5
    assert plan.baseline_sequence[0] == plan.baseline_sequence[2]
    q_only = build_scoring_sequence(tokenizer, question_scoring_messages("Task.", "Q?"), "Paris")
    assert plan.sequences[plan.baseline_sequence[0]] == q_only
    history = history_scoring_messages("Task.", "Q?", [rows[0].turns[0]])
    assert plan.sequences[plan.baseline_sequence[1]] == build_scoring_sequence(tokenizer, history, "Paris")

    none_plan = plan_memory_credit(rows, _sessions(rows), tokenizer, baseline="none")
    assert none_plan.baseline_sequence == (None, None, None) and len(none_plan.sequences) == 3


def test_plan_skips_sequence_rows_and_reads_the_memory_later_turns_see(tokenizer):
    # a `sequence` row (full policy) holds the whole history: no single <mem> to credit, A^T only (DESIGN §3)
    sequence = _segment_turn("S", 0, "m-s0", layout="sequence")
    assert sequence.credited_turn is None
    # a memory over its token budget: R^M scores what later contexts show, s_<t keeps the turn as written
    written = "Aldmark capital Velmora founded 1203 by the Tavren Guild"
    cut = _segment_turn("A", 0, written)
    cut = dataclasses.replace(cut, turns=(dataclasses.replace(cut.turns[0], memory_in_context="Aldmark capital"),))
    rows = [sequence, cut, _segment_turn("A", 1, "m-a1")]
    plan = plan_memory_credit(rows, _sessions(rows), tokenizer, baseline="prefix")
    assert plan.memory_rows == (1, 2)
    shown = build_scoring_sequence(tokenizer, memory_scoring_messages("Task.", "Q?", "Aldmark capital"), "Paris")
    assert plan.sequences[plan.memory_sequence[0]] == shown
    user = f"Q?\n\n<mem>{written}</mem><think>t</think><answer>x</answer>\n<information>obs</information>"
    history = [{"role": "system", "content": "Task."}, {"role": "user", "content": user}]
    assert plan.sequences[plan.baseline_sequence[1]] == build_scoring_sequence(tokenizer, history, "Paris")


def test_credit_scatters_probabilities_to_rows(tokenizer):
    rows = [_segment_turn("A", 0, "m-a0"), None, _segment_turn("A", 1, "m-a1")]
    plan = plan_memory_credit(rows, _sessions(rows), tokenizer, baseline="prefix")
    probabilities = torch.arange(len(plan.sequences), dtype=torch.float32) / 10
    credit = memory_credit_from_probabilities(plan, probabilities, num_rows=3)
    assert credit.has_memory.tolist() == [True, False, True]
    for position, row in enumerate(plan.memory_rows):
        p_mem = probabilities[plan.memory_sequence[position]]
        eps = probabilities[plan.baseline_sequence[position]]
        assert credit.memory_reward[row].item() == pytest.approx((p_mem - eps).item())  # Eq. 5
    assert torch.isnan(credit.memory_reward[1])  # a row without memory has no R^M
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        memory_credit_from_probabilities(plan, torch.zeros(2), num_rows=3)


def test_memory_with_stray_tags_is_scored_verbatim(tokenizer):
    # a malformed turn's memory (model output) may contain other tags: the scoring context shows it as written
    memory = '<tool_call>{"name": "search"}'
    messages = memory_scoring_messages("Task.", "Q?", memory)
    assert messages[1]["content"] == f"Q?\n\n<mem>{memory}</mem>"
    rows = [_segment_turn("A", 0, memory)]
    assert plan_memory_credit(rows, _sessions(rows), tokenizer).memory_rows == (0,)


def test_prefix_baseline_holds_every_earlier_turn(tokenizer):
    # three turns of one session: ε of turn 2 is scored on the question then turns 0 AND 1 in full (not only turn 1)
    texts = [
        "<mem>need capital</mem><think>search</think><tool_call>{}</tool_call>",
        "<mem>France</mem><think>again</think><tool_call>{}</tool_call>",
        "<mem>Paris</mem><think>done</think><answer>Paris</answer>",
    ]
    observations = ["Doc A", "Doc B", None]
    rows = [_segment_turn("A", t, f"m{t}", text=texts[t], observation=observations[t]) for t in range(3)]
    plan = plan_memory_credit(rows, _sessions(rows), tokenizer, baseline="prefix")
    # written out by hand: the user message of s_<2 (question, blank line, each earlier turn and its information)
    user_2 = (
        "Q?\n\n"
        "<mem>need capital</mem><think>search</think><tool_call>{}</tool_call>\n<information>Doc A</information>\n\n"
        "<mem>France</mem><think>again</think><tool_call>{}</tool_call>\n<information>Doc B</information>"
    )
    messages_2 = [{"role": "system", "content": "Task."}, {"role": "user", "content": user_2}]
    assert plan.sequences[plan.baseline_sequence[2]] == build_scoring_sequence(tokenizer, messages_2, "Paris")
    # s_<1 holds turn 0 only; s_<0 is the question alone (ε_1 = P[ans | q])
    user_1 = (
        "Q?\n\n<mem>need capital</mem><think>search</think><tool_call>{}</tool_call>\n<information>Doc A</information>"
    )
    messages_1 = [{"role": "system", "content": "Task."}, {"role": "user", "content": user_1}]
    assert plan.sequences[plan.baseline_sequence[1]] == build_scoring_sequence(tokenizer, messages_1, "Paris")
    messages_0 = [{"role": "system", "content": "Task."}, {"role": "user", "content": "Q?"}]
    assert plan.sequences[plan.baseline_sequence[0]] == build_scoring_sequence(tokenizer, messages_0, "Paris")


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([0, 2], r"turns \[0, 2\] \(missing \[1\], doubled \[\]\)"),
        ([0, 1, 1], r"turns \[0, 1, 1\] \(missing \[\], doubled \[1\]\)"),
        ([1, 2], r"turns \[1, 2\] \(missing \[0\], doubled \[\]\)"),
    ],
)
def test_incomplete_session_history_is_an_error(tokenizer, turns, message):
    # a session whose turn 1 is not in the batch would score turn 2's ε on turn 0 alone: a silently short s_<t
    rows = [_segment_turn("A", t, f"m{t}") for t in turns]
    with pytest.raises(ValueError, match=rf"session 'A' has {message}"):
        plan_memory_credit(rows, _sessions(rows), tokenizer, baseline="prefix")


# --- the length policy: ε contexts beyond the scoring window --------------------------------------------------------


def _long_session(tokenizer):
    """Three turns whose observations are long, so ε_2's history [turn 0, turn 1] is much longer than its memory."""
    observations = ["Doc A " + "alpha " * 60, "Doc B " + "beta " * 60, None]
    texts = [f"<mem>m{t}</mem><think>t</think><tool_call>{{}}</tool_call>" for t in range(3)]
    return [_segment_turn("A", t, f"m{t}", text=texts[t], observation=observations[t]) for t in range(3)]


def test_eps_over_the_window_keeps_the_newest_turns_that_fit(tokenizer):
    rows = _long_session(tokenizer)
    full = plan_memory_credit(rows, _sessions(rows), tokenizer, baseline="prefix")
    turn_0, turn_1 = (r.turns[0] for r in rows[:2])
    # the lengths, measured independently: ε_2 over both turns, over turn 1 only, and the memory contexts
    both = len(
        build_scoring_sequence(tokenizer, history_scoring_messages("Task.", "Q?", [turn_0, turn_1]), "Paris").input_ids
    )
    newest = build_scoring_sequence(tokenizer, history_scoring_messages("Task.", "Q?", [turn_1]), "Paris")
    assert len(newest.input_ids) < both
    window = len(newest.input_ids)  # fits [turn 1] exactly, not [turn 0, turn 1]
    plan = plan_memory_credit(rows, _sessions(rows), tokenizer, baseline="prefix", max_length=window)
    # every row keeps its R^M; ε_2 is scored on turn 1 alone (the oldest turn dropped), ε_1 on turn 0 (it fits)
    assert plan.memory_rows == (0, 1, 2) and plan.too_long == 0
    assert plan.sequences[plan.baseline_sequence[2]] == newest
    assert plan.sequences[plan.baseline_sequence[1]] == full.sequences[full.baseline_sequence[1]]
    assert plan.eps_truncated == 1
    assert max(len(s.input_ids) for s in plan.sequences) <= window
    # with no window nothing is cut
    assert full.eps_truncated == 0 and full.too_long == 0


def test_a_context_that_never_fits_leaves_the_row_without_memory_credit(tokenizer):
    rows = _long_session(tokenizer)
    memory_0 = build_scoring_sequence(tokenizer, memory_scoring_messages("Task.", "Q?", "m0"), "Paris")
    question = build_scoring_sequence(tokenizer, question_scoring_messages("Task.", "Q?"), "Paris")
    assert len(question.input_ids) < len(memory_0.input_ids)
    # one token short of every memory context: no row gets R^M, none crashes, all three are counted
    plan = plan_memory_credit(
        rows, _sessions(rows), tokenizer, baseline="prefix", max_length=len(memory_0.input_ids) - 1
    )
    assert plan.memory_rows == () and plan.sequences == () and plan.too_long == 3
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        plan_memory_credit(rows, _sessions(rows), tokenizer, max_length=1)
