"""Memory credit (MemPO Eq. 4-5): how much the memory written at step t raises the policy's belief in the gold answer.

MemPO, arXiv 2603.00680 (https://arxiv.org/abs/2603.00680), §3; DESIGN §3 rows "P[ans | ctx]" and "ε (baseline)"::

    P[ans | ctx] = exp( (1/|a|) Σ_{j ∈ a} log π(a_j | ctx, a_<j) )        (Eq. 4: geometric mean over gold tokens a)
    R^M_t        = P[ans | q, mem_t] − ε_t                                 (Eq. 5)
    ε_t          = P[ans | q, s_<t]      s_<t = mem, think, call and information of every turn < t; t = 1: P[ans | q]

The gold answer ``a`` is written as the model would write it, ``<answer>{gold}</answer>``, and teacher-forced right
after the scoring context's generation prompt. This module builds those teacher-forced *scoring sequences* (pure,
model-free: the trainer scores the same sequences through verl's actor), plans them for a batch of segments
(``plan_memory_credit``: a segment's ``credited_turn`` gets R^M, its session's earlier ``turns.TurnRecord``s are
s_<t, and the session's task prompt, question, gold answer and tools are the segment's), and holds the math on
their log-probs. ``token_logprobs`` / ``score_answer_probability`` are the CPU and test path with a transformers
causal LM.

Notation:
    B   scoring sequences in a batch (one per ``<mem>`` segment, or per baseline context)
    L   padded sequence length: prompt tokens then response tokens ``<answer>…</answer>``
    V   vocabulary size

Log-prob convention (``token_logprobs``): position i holds log π(input_ids[i] | input_ids[<i]); position 0 holds 0
(nothing predicts the first token), and so do padding positions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mempo_verl.config import BaselineMode
from mempo_verl.protocol import DEFAULT_TAGS, Message, TagSet, render_answer
from mempo_verl.segments import Segment
from mempo_verl.turns import TurnRecord, render_earlier_turn

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# 1. Scoring contexts as chat messages. Small functions on purpose: a later issue aligns them with the rollout's
#    ContextPolicy (system = task prompt; user = question, then the memory block or the history).
# ---------------------------------------------------------------------------------------------------------------


def _scoring_messages(task_prompt: str, question: str, blocks: Sequence[str]) -> list[Message]:
    """system = task prompt; user = the question, then each context block, separated by blank lines."""
    return [
        {"role": "system", "content": task_prompt},
        {"role": "user", "content": "\n\n".join([question, *blocks])},
    ]


def question_scoring_messages(task_prompt: str, question: str) -> list[Message]:
    """Context of P[ans | q] (ε_1, and ε_t for ``baseline="question"``): the question alone."""
    return _scoring_messages(task_prompt, question, [])


def memory_scoring_messages(task_prompt: str, question: str, memory: str, tags: TagSet = DEFAULT_TAGS) -> list[Message]:
    """Context of P[ans | q, mem_t] (Eq. 5, first term): the question, then ``<mem>{memory}</mem>``.

    ``memory`` is the content of the turn's ``<mem>`` block as later contexts show it (cut to its token budget,
    ``turns.TurnRecord.memory_in_context``), so R^M credits what the policy will read; a turn without one has no R^M
    (DESIGN §3), so it never reaches here. It is model output and may hold stray tags (a malformed turn's
    ``<mem>`` can contain ``<tool_call>``): it is wrapped verbatim, as the model wrote it, since the scoring
    context is read by the model, never parsed back (``render_block`` would refuse it).
    """
    return _scoring_messages(task_prompt, question, [f"{tags.open('mem')}{memory}{tags.close('mem')}"])


def history_scoring_messages(
    task_prompt: str, question: str, history: Sequence[TurnRecord], tags: TagSet = DEFAULT_TAGS
) -> list[Message]:
    """Context of P[ans | q, s_<t] (ε_t, ``baseline="prefix"``): the question, then every turn < t in full.

    t = 1 has an empty history, which gives exactly ``question_scoring_messages`` (ε_1 = P[ans | q]).
    """
    # each turn as the model wrote it, then its <information> on the next line (s_<t uncompressed)
    blocks = [render_earlier_turn(turn, tags, verbatim=True) for turn in history]
    return _scoring_messages(task_prompt, question, blocks)


def _prefix_baseline(task_prompt: str, question: str, history: Sequence[TurnRecord], tags: TagSet) -> list[Message]:
    return history_scoring_messages(task_prompt, question, history, tags)


def _question_baseline(task_prompt: str, question: str, history: Sequence[TurnRecord], tags: TagSet) -> list[Message]:
    return question_scoring_messages(task_prompt, question)


def _no_baseline(task_prompt: str, question: str, history: Sequence[TurnRecord], tags: TagSet) -> None:
    # ε = 0: nothing to score; the caller passes a zero baseline to memory_reward
    return None


_BASELINE_CONTEXTS: dict[BaselineMode, Callable[[str, str, Sequence[TurnRecord], TagSet], list[Message] | None]] = {
    "prefix": _prefix_baseline,
    "question": _question_baseline,
    "none": _no_baseline,
}


def baseline_scoring_messages(
    mode: BaselineMode,
    task_prompt: str,
    question: str,
    history: Sequence[TurnRecord],
    tags: TagSet = DEFAULT_TAGS,
) -> list[Message] | None:
    """Context whose answer probability is ε_t (Eq. 5), or ``None`` for ``mode="none"`` (ε_t = 0)."""
    if mode not in _BASELINE_CONTEXTS:
        raise ValueError(f"baseline mode {mode!r} is unknown; choose one of {list(_BASELINE_CONTEXTS)}")
    return _BASELINE_CONTEXTS[mode](task_prompt, question, history, tags)


# ---------------------------------------------------------------------------------------------------------------
# 2. Teacher-forced scoring sequences: prompt ids as at rollout, then `<answer>{gold}</answer>`, with a gold mask.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoringSequence:
    """One teacher-forced sequence: chat prompt then ``<answer>{gold}</answer>``; lists are stored as tuples."""

    input_ids: tuple[int, ...]
    """(L,) prompt ids then response ids."""
    answer_mask: tuple[int, ...]
    """(L,) 1 on the tokens that carry the gold text (tag-straddling BPE merges included), 0 elsewhere."""
    prompt_length: int
    """Number of prompt ids; the response starts here, where generation starts at rollout."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_ids", tuple(int(i) for i in self.input_ids))
        object.__setattr__(self, "answer_mask", tuple(int(m) for m in self.answer_mask))
        length = len(self.input_ids)
        if len(self.answer_mask) != length:
            raise ValueError(f"ScoringSequence: answer_mask has length {len(self.answer_mask)}, input_ids {length}")
        if not 1 <= self.prompt_length < length:
            raise ValueError(
                f"ScoringSequence: prompt_length must be in [1, {length}) so that the response is non-empty and "
                f"follows at least one token, got {self.prompt_length}"
            )
        if set(self.answer_mask) - {0, 1}:
            raise ValueError(f"ScoringSequence: answer_mask must hold 0/1, got {sorted(set(self.answer_mask))}")
        if any(self.answer_mask[: self.prompt_length]):
            raise ValueError("ScoringSequence: answer_mask marks prompt tokens; only response tokens can be gold")


def _chat_prompt_ids(tokenizer: Any, messages: Sequence[Message], tools: Sequence[dict] | None) -> list[int]:
    """``apply_chat_template(..., add_generation_prompt=True, tokenize=True)`` as a flat list of ids.

    transformers 5 returns a ``BatchEncoding`` by default and may nest ids in a batch of one; both are unwrapped.
    """
    ids = tokenizer.apply_chat_template(list(messages), tools=tools, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, Mapping):
        ids = ids["input_ids"]
    if len(ids) == 1 and isinstance(ids[0], list):
        ids = ids[0]
    return [int(i) for i in ids]


def build_scoring_sequence(
    tokenizer: Any,
    messages: Sequence[Message],
    answer: str,
    tags: TagSet = DEFAULT_TAGS,
    *,
    tools: Sequence[dict] | None = None,
) -> ScoringSequence:
    """Teacher-forced sequence for P[answer | messages] (Eq. 4).

    Args:
        tokenizer: a *fast* Hugging Face tokenizer (the offset mapping locates the gold tokens).
        messages: the scoring context (``memory_scoring_messages``, ``baseline_scoring_messages``, …).
        answer: the gold answer text (first alias per objective joined with "; "), unwrapped.
        tags: tag names; the response is ``render_answer(answer, tags)``.
        tools: tool schemas passed to the chat template, as the rollout passes them (default none).

    Returns:
        ``ScoringSequence`` whose prompt ids are exactly the chat template's ids with the generation prompt, and
        whose response is ``<answer>{answer}</answer>`` tokenized on its own (generation starts after the prompt,
        so the model sees that boundary). The answer mask is 1 on every response token whose character span
        overlaps the gold text: BPE may merge a tag character with the gold's first or last character (Qwen2.5
        writes ``<answer>New York`` as ``<``, ``answer``, ``>New``, `` York``), so tokenizing the pieces separately
        would give ids the model never produces; the straddling token is kept, as it carries gold characters.

    Raises:
        ValueError: empty (or whitespace-only) answer; an answer that yields no response token; an answer holding
            a tag of ``tags`` (from ``render_answer``).
        TypeError: a tokenizer without offset mapping (a slow tokenizer).
    """
    # 1. the gold must have text to score: P over zero tokens is undefined
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"build_scoring_sequence: the gold answer is empty ({answer!r}); P[ans | ctx] needs tokens")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"build_scoring_sequence needs a fast tokenizer (offset mapping), got {type(tokenizer).__name__}"
        )
    # 2. prompt: the ids the model sees at rollout
    prompt_ids = _chat_prompt_ids(tokenizer, messages, tools)
    # 3. response and the gold's character span inside it: render_answer writes open tag + answer + close tag
    response = render_answer(answer, tags)
    gold_start = len(tags.open("answer"))
    gold_end = gold_start + len(answer)
    if response[gold_start:gold_end] != answer:
        raise RuntimeError(f"render_answer no longer writes open tag + answer + close tag: {response!r}")
    encoding = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    # 4. gold tokens = response tokens whose (non-empty) character span overlaps [gold_start, gold_end)
    answer_mask = [int(end > start and start < gold_end and end > gold_start) for start, end in encoding.offset_mapping]
    if not any(answer_mask):
        raise ValueError(f"build_scoring_sequence: the gold answer {answer!r} produces no tokens in {response!r}")
    return ScoringSequence(
        input_ids=tuple(prompt_ids) + tuple(encoding.input_ids),
        answer_mask=(0,) * len(prompt_ids) + tuple(answer_mask),
        prompt_length=len(prompt_ids),
    )


def collate_scoring_sequences(
    sequences: Sequence[ScoringSequence], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad ``sequences`` into a batch.

    Returns:
        ``input_ids`` (B, L) long, ``pad_id`` after each sequence; ``attention_mask`` (B, L) long, 1 on real
        tokens; ``answer_mask`` (B, L) long, 1 on gold tokens. L is the longest sequence.
    """
    if len(sequences) == 0:
        raise ValueError("collate_scoring_sequences: no sequences to collate")
    length = max(len(seq.input_ids) for seq in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)  # (B, L)
    answer_mask = torch.zeros((len(sequences), length), dtype=torch.long)  # (B, L)
    for row, seq in enumerate(sequences):
        n = len(seq.input_ids)
        input_ids[row, :n] = torch.tensor(seq.input_ids, dtype=torch.long)
        attention_mask[row, :n] = 1
        answer_mask[row, :n] = torch.tensor(seq.answer_mask, dtype=torch.long)
    return input_ids, attention_mask, answer_mask


# ---------------------------------------------------------------------------------------------------------------
# 3. The math: Eq. 4 (geometric-mean answer probability) and Eq. 5 (memory reward).
# ---------------------------------------------------------------------------------------------------------------


def _rows(flags: torch.Tensor) -> list[int]:
    return flags.nonzero().flatten().tolist()


def geometric_mean_prob(token_logprobs: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """P[ans | ctx] per row (Eq. 4): the geometric mean of the gold tokens' probabilities.

        P_b = exp( Σ_i m_bi · logp_bi / Σ_i m_bi )

    Args:
        token_logprobs: (B, L) log π of each token given its prefix (``token_logprobs`` convention).
        answer_mask: (B, L) nonzero on gold-answer tokens (bool, int or float 0/1).

    Returns:
        (B,) probabilities in [0, 1], float32 or wider. Values outside the mask are ignored, NaN or -inf included.

    Raises:
        ValueError: shapes differ or are not 2-D (both shapes named); a row whose mask selects no token (P over no
            tokens is undefined); a NaN log-prob on a gold token (named by row, never a silent NaN reward).
    """
    if token_logprobs.dim() != 2 or token_logprobs.shape != answer_mask.shape:
        raise ValueError(
            f"geometric_mean_prob: token_logprobs {tuple(token_logprobs.shape)} and answer_mask "
            f"{tuple(answer_mask.shape)} must both be (B, L)"
        )
    mask = answer_mask != 0  # (B, L)
    counts = mask.sum(dim=-1)  # (B,)
    if (counts == 0).any():
        raise ValueError(f"geometric_mean_prob: answer_mask selects no token in row(s) {_rows(counts == 0)}")
    nan_rows = (torch.isnan(token_logprobs) & mask).any(dim=-1)  # (B,)
    if nan_rows.any():
        raise ValueError(f"geometric_mean_prob: NaN log-prob on answer tokens of row(s) {_rows(nan_rows)}")
    logprobs = token_logprobs.to(torch.promote_types(token_logprobs.dtype, torch.float32))
    # where, not multiply: 0 · (-inf) at an unmasked position would be NaN
    masked = torch.where(mask, logprobs, torch.zeros_like(logprobs))  # (B, L)
    return torch.exp(masked.sum(dim=-1) / counts)  # (B,)


def memory_reward(p_memory: torch.Tensor, p_baseline: torch.Tensor) -> torch.Tensor:
    """R^M_t = P[ans | q, mem_t] − ε_t (Eq. 5).

    Args:
        p_memory: (B,) P[ans | q, mem_t] of each ``<mem>`` segment.
        p_baseline: (B,) ε_t of the same segments; zeros for ``baseline="none"``.

    Returns:
        (B,) memory rewards in [-1, 1].
    """
    if p_memory.dim() != 1 or p_memory.shape != p_baseline.shape:
        raise ValueError(
            f"memory_reward: p_memory {tuple(p_memory.shape)} and p_baseline {tuple(p_baseline.shape)} "
            "must both be (B,)"
        )
    return p_memory - p_baseline


# ---------------------------------------------------------------------------------------------------------------
# 4. CPU / test path: score sequences with a transformers causal LM (the trainer uses verl's actor instead).
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def token_logprobs(model: torch.nn.Module, sequences: Sequence[ScoringSequence], batch_size: int = 16) -> torch.Tensor:
    """Teacher-forced log-probs of every token, in micro-batches of ``batch_size``.

    Args:
        model: a transformers causal LM (``model(input_ids, attention_mask).logits``), in eval mode.
        sequences: B scoring sequences, of any lengths.
        batch_size: sequences per forward pass; bounds memory to one micro-batch of (b, L_b, V) logits and their
            log-softmax at a time (V is 151k for Qwen2.5).

    Returns:
        (B, L) float32 on CPU, aligned with ``collate_scoring_sequences``: position i holds
        log π(input_ids[i] | input_ids[<i]); position 0 and padding positions hold 0.
    """
    if batch_size < 1:
        raise ValueError(f"token_logprobs: batch_size must be >= 1, got {batch_size}")
    if model.training:
        logger.warning("token_logprobs: model is in training mode; dropout makes the scores stochastic")
    device = next(model.parameters()).device
    length = max((len(seq.input_ids) for seq in sequences), default=0)
    out = torch.zeros((len(sequences), length), dtype=torch.float32)  # (B, L)
    for first in range(0, len(sequences), batch_size):
        chunk = sequences[first : first + batch_size]
        # pad only to this micro-batch's longest sequence; the pad id is never attended to and its outputs are zeroed
        ids, attention, _ = collate_scoring_sequences(chunk, pad_id=0)  # (b, L_b)
        ids, attention = ids.to(device), attention.to(device)
        logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits  # (b, L_b, V)
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (b, L_b - 1, V): predicts ids[:, 1:]
        del logits
        picked = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (b, L_b - 1)
        del logprobs
        picked = torch.where(attention[:, 1:].bool(), picked, torch.zeros_like(picked))
        out[first : first + len(chunk), 1 : ids.shape[1]] = picked.cpu()
    return out


def score_answer_probability(
    model: torch.nn.Module, sequences: Sequence[ScoringSequence], batch_size: int = 16
) -> torch.Tensor:
    """P[ans | ctx] of each sequence (Eq. 4) under ``model``: ``geometric_mean_prob`` over its answer mask.

    Returns:
        (B,) float32 on CPU.
    """
    logprobs = token_logprobs(model, sequences, batch_size)  # (B, L)
    _, _, answer_mask = collate_scoring_sequences(sequences, pad_id=0)  # (B, L)
    return geometric_mean_prob(logprobs, answer_mask)


# ---------------------------------------------------------------------------------------------------------------
# 5. A batch's memory-credit plan: which sequences to score for which rows, each unique sequence scored once.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryCreditPlan:
    """Sequences to score and how their answer probabilities map back to rows.

    ``sequences`` holds each distinct sequence once: every session of a prompt shares its t = 1 baseline P[ans | q]
    (and all of them under ``baseline="question"``), so deduplication saves a large share of the scoring cost.
    """

    sequences: tuple[ScoringSequence, ...]
    memory_rows: tuple[int, ...]
    """Batch rows that get an R^M."""
    memory_sequence: tuple[int, ...]
    """Per memory row: index into ``sequences`` of its P[ans | q, mem_t] sequence."""
    baseline_sequence: tuple[int | None, ...]
    """Per memory row: index of its ε_t sequence; None when ε_t = 0 (``baseline="none"``)."""
    eps_truncated: int = 0
    """Memory rows whose ε_t context lost its oldest turns to fit ``max_length`` (the length policy)."""
    too_long: int = 0
    """Rows with a ``<mem>`` and a gold answer left without R^M: their memory context, or the ε context with no
    history left, is longer than ``max_length`` (the segment gets A^T only)."""


def session_histories(
    segments: Sequence[Segment | None], sessions: Sequence[Hashable]
) -> dict[Hashable, list[TurnRecord]]:
    """Each session's credited turns in turn order, checked complete: turn indices 0, 1, …, n-1, each once.

    s_<t of the ``prefix`` baseline is rebuilt from the session's earlier rows, so a missing (or doubled) turn would
    silently shorten (or repeat) the history. verl stores every output of a session in the same step, so a gap is
    a bug upstream: it raises, naming the session and the turns it has.

    Args:
        segments: `(B,)` per batch row; None for padding rows, skipped as are rows without a credited turn
            (``Segment.credited_turn``: the ``sequence`` layout).
        sessions: `(B,)` hashable id of each row's session; rows of one session share it.

    Returns:
        ``{session: [TurnRecord, …]}`` sorted by ``turn_index``.
    """
    history: dict[Hashable, list[TurnRecord]] = {}
    for segment, session in zip(segments, sessions, strict=True):
        turn = segment.credited_turn if segment is not None else None
        if turn is not None:
            history.setdefault(session, []).append(turn)
    for session, turns in history.items():
        turns.sort(key=lambda turn: turn.turn_index)
        indices = [turn.turn_index for turn in turns]
        if indices != list(range(len(turns))):
            missing = sorted(set(range(max(indices) + 1)) - set(indices))
            doubled = sorted({index for index in indices if indices.count(index) > 1})
            raise ValueError(
                f"session {session!r} has turns {indices} (missing {missing}, doubled {doubled}): every turn of a "
                "session must be in the batch once, or s_<t of its later turns would be wrong"
            )
    return history


def _credited_memory(segment: Segment | None) -> str | None:
    """The memory the row's R^M credits, or None: no credited turn (padding, ``sequence`` layout), no ``<mem>``,
    or no gold answer to teacher-force (R^M undefined: the row gets A^T only, DESIGN §3)."""
    turn = segment.credited_turn if segment is not None else None
    if turn is None or turn.mem_span is None or not (segment.gold_answer or "").strip():
        return None
    # R^M credits the memory later turns read: cut to mempo.context.memory_token_budget when over it
    return turn.memory_in_context


def plan_memory_credit(
    segments: Sequence[Segment | None],
    sessions: Sequence[Hashable],
    tokenizer: Any,
    baseline: BaselineMode = "prefix",
    tags: TagSet = DEFAULT_TAGS,
    max_length: int | None = None,
) -> MemoryCreditPlan:
    """Build the scoring sequences of Eq. 5 for every row with a credited ``<mem>`` and a gold answer.

    Args:
        segments: `(B,)` per batch row, or None for rows without memory credit (padding rows). A row is credited
            through ``Segment.credited_turn`` (none under the ``sequence`` layout); the session's task prompt,
            question, gold answer and tool schemas are the segment's.
        sessions: `(B,)` hashable id of each row's session (s_<t is rebuilt from its earlier rows).
        tokenizer: fast tokenizer of the policy.
        baseline: ε_t mode, see ``BaselineMode``.
        tags: tag names.
        max_length: the scoring window, most tokens of a scoring sequence (context + ``<answer>…</answer>``);
            None: no limit. The length policy, never a crash:

            * an ε_t context [task, q, s_<t] over it keeps the **newest** turns of s_<t that fit after [task, q]
              (ε_t = P[ans | q, s_k..s_{t-1}] with the smallest such k; counted in ``eps_truncated``): the turns
              nearest the memory being credited are the ones it competes with;
            * a memory context [task, q, mem_t] over it, or an ε context over it with no turn left, leaves the row
              without R^M (A^T only, as a row without ``<mem>``; counted in ``too_long``).

    Each row's sequences are built with its segment's ``tool_schemas``, as at rollout.
    """
    if baseline not in _BASELINE_CONTEXTS:
        raise ValueError(f"baseline mode {baseline!r} is unknown; choose one of {list(_BASELINE_CONTEXTS)}")
    if max_length is not None and max_length < 2:
        raise ValueError(f"plan_memory_credit: max_length must be >= 2 tokens (or None), got {max_length}")
    history = session_histories(segments, sessions)

    index_of: dict[tuple[int, ...], int] = {}
    sequences: list[ScoringSequence] = []

    def add(sequence: ScoringSequence) -> int:
        if sequence.input_ids not in index_of:
            index_of[sequence.input_ids] = len(sequences)
            sequences.append(sequence)
        return index_of[sequence.input_ids]

    memory_rows, memory_sequence, baseline_sequence = [], [], []
    eps_truncated = too_long = 0
    for row_index, (segment, session) in enumerate(zip(segments, sessions, strict=True)):
        memory_text = _credited_memory(segment)
        if memory_text is None:
            continue  # no <mem> or no gold: R^M undefined, the row gets A^T only
        turn_index = segment.credited_turn.turn_index
        earlier = [turn for turn in history[session] if turn.turn_index < turn_index]
        memory_messages = memory_scoring_messages(segment.task_prompt, segment.question_text, memory_text, tags)
        tools = list(segment.tool_schemas)
        memory = build_scoring_sequence(tokenizer, memory_messages, segment.gold_answer, tags, tools=tools)
        fitted = _fitted_baseline(segment, earlier, tokenizer, baseline, tags, max_length)
        if (max_length is not None and len(memory.input_ids) > max_length) or fitted is None:
            too_long += 1  # why: a context past the window has no P under the policy; A^T only, never a crash
            continue
        baseline_seq, dropped = fitted
        eps_truncated += dropped > 0
        memory_rows.append(row_index)
        memory_sequence.append(add(memory))
        baseline_sequence.append(None if baseline_seq is None else add(baseline_seq))
    return MemoryCreditPlan(
        tuple(sequences), tuple(memory_rows), tuple(memory_sequence), tuple(baseline_sequence), eps_truncated, too_long
    )


def _fitted_baseline(
    segment: Segment,
    earlier: Sequence[TurnRecord],
    tokenizer: Any,
    baseline: BaselineMode,
    tags: TagSet,
    max_length: int | None,
) -> tuple[ScoringSequence | None, int] | None:
    """ε_t's sequence over the newest turns of ``earlier`` that fit ``max_length`` and the number dropped;
    ``(None, 0)`` for ``baseline="none"``; None when nothing fits (not even the context with no turn left).

    The sequence only shortens as older turns are dropped, so the fewest drops is a binary search over k, the
    number of oldest turns dropped (O(log t) tokenisations).
    """

    def build(k: int) -> ScoringSequence | None:
        messages = baseline_scoring_messages(baseline, segment.task_prompt, segment.question_text, earlier[k:], tags)
        if messages is None:
            return None
        tools = list(segment.tool_schemas)
        return build_scoring_sequence(tokenizer, messages, segment.gold_answer, tags, tools=tools)

    def fits(sequence: ScoringSequence | None) -> bool:
        return sequence is None or max_length is None or len(sequence.input_ids) <= max_length

    whole = build(0)
    if fits(whole):
        return whole, 0
    if not fits(build(len(earlier))):
        return None
    lo, hi = 1, len(earlier)  # the smallest k in [1, t] whose sequence fits; k = t fits
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(build(mid)):
            hi = mid
        else:
            lo = mid + 1
    return build(lo), lo


@dataclass(frozen=True)
class MemoryCredit:
    """Per-row results of the memory-credit step; rows without memory hold NaN and ``has_memory`` False."""

    memory_reward: torch.Tensor
    """(B,) R^M = P[ans | q, mem_t] − ε_t (Eq. 5)."""
    p_memory: torch.Tensor
    """(B,) P[ans | q, mem_t]."""
    p_baseline: torch.Tensor
    """(B,) ε_t."""
    has_memory: torch.Tensor
    """(B,) bool."""

    @property
    def noise_scale(self) -> torch.Tensor:
        """(B,) sqrt(P[ans | q, mem_t]² + ε_t²): rounding moves each probability by a fraction of itself, so the
        scoring noise of R^M (Eq. 5, a difference of two) scales with this (``config.MEMORY_NOISE_FLOOR``)."""
        return torch.sqrt(self.p_memory**2 + self.p_baseline**2)


def memory_credit_from_probabilities(
    plan: MemoryCreditPlan, answer_probability: torch.Tensor, num_rows: int
) -> MemoryCredit:
    """Scatter the scored sequences' P[ans | ctx] (``(len(plan.sequences),)``) back to the batch's rows."""
    if answer_probability.shape != (len(plan.sequences),):
        raise ValueError(
            f"answer_probability has shape {tuple(answer_probability.shape)}, expected ({len(plan.sequences)},)"
        )
    p_memory = torch.full((num_rows,), float("nan"))
    p_baseline = torch.full((num_rows,), float("nan"))
    has_memory = torch.zeros(num_rows, dtype=torch.bool)
    rows = list(plan.memory_rows)
    if rows:
        p_memory[rows] = answer_probability[list(plan.memory_sequence)].float()
        p_baseline[rows] = torch.stack(
            [answer_probability[i].float() if i is not None else torch.tensor(0.0) for i in plan.baseline_sequence]
        )
        has_memory[rows] = True
    return MemoryCredit(memory_reward(p_memory, p_baseline), p_memory, p_baseline, has_memory)
