"""Segment metadata: what each training row (one ``AgentLoopOutput``) carries in verl's ``extra_fields``.

One segment per turn under the ``per_turn`` layout (``memory``, ``mem1``), one per trajectory under ``sequence``
(``full``) (DESIGN §1, §3; ``layout.py``). verl 0.9.1
stores ``extra_fields`` whole per TransferQueue row and merges the last output's into the reward function's
``extra_info`` (VERL_NOTES.md "Measured here"), so:

- everything MemPO's trainer needs per segment sits under one key, ``extra_fields["mempo"]`` (``Segment``): its
  turns (``turns.TurnRecord``, the loop's own records: memory, token spans, text and observation, so s_<t is
  rebuilt from the session's earlier segments), its layout, and the session's questions, task prompt, tool
  schemas and gold answer;
- the reward contract of ``rewards.compute_score`` sits flat on the last segment: ``final_answer``,
  ``format_valid``, ``reward_mode``, ``answer_normalization``.

Notation: a segment's response ids have length T; spans are half-open token index ranges ``[start, end)`` into
them; ``turn_index`` is 0-based within the session (the ``{index}`` of verl's row key ``{uid}_{session}_{index}``
under the per-turn layout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from mempo_verl.context import SegmentLayoutName
from mempo_verl.turns import TurnRecord
from mempo_verl.values import as_python

EXTRA_FIELDS_KEY = "mempo"
"""The key of the segment dict inside verl's ``extra_fields``."""

TerminationReason = Literal[
    "answer",  # a valid turn gave the final answer
    "max_turns",  # the last allowed turn asked for a tool (R^T = 0, DESIGN §3)
    "format_error",  # the turn does not parse (no tags, unterminated <mem>, bad tool JSON, empty answer, …)
    "unknown_tool",  # a valid turn called a tool the environment does not offer
    "undecodable",  # the turn holds a token id the tokenizer cannot decode
    "truncated",  # generation hit its token limit before the turn was complete
    "prompt_budget",  # the next turn's context would not fit its token budget
]
"""Why an episode ended; recorded on its last segment."""

TERMINATION_REASONS: tuple[TerminationReason, ...] = get_args(TerminationReason)


@dataclass(frozen=True)
class EpisodeSummary:
    """Per-trajectory numbers, on the last segment (DESIGN §6)."""

    num_turns: int
    """Model turns in the episode."""
    total_tokens: int
    """TT = Σ over turns of prompt + completion tokens."""
    peak_tokens: int
    """PT = max over turns of prompt + completion tokens."""
    env_failures: int
    """Tool calls whose observation came back ``ok=False`` (timeouts and environment exceptions included)."""
    memory_truncations: int
    """Memories cut to their token budget before a later context showed them."""


@dataclass(frozen=True)
class SegmentCredit:
    """P[ans | ·] of one ``<mem>`` segment as the rollout server scored it at session end (``mempo.credit.scorer:
    rollout``, ``rollout_credit.py``); the trainer only z-scores them (A^M)."""

    p_memory: float
    """P[ans | q, mem_t] (Eq. 4 on the memory context)."""
    p_baseline: float
    """ε_t (Eq. 5): P[ans | q, s_<t] under ``baseline: prefix``, P[ans | q] under ``question``, 0 under ``none``."""


@dataclass(frozen=True)
class CreditStats:
    """The scoring work of one session under ``scorer: rollout`` (last segment only)."""

    sequences: int
    """Distinct scoring sequences of the session."""
    scored_tokens: int
    """Σ of their lengths: the tokens a scorer without prefix reuse computes."""
    computed_tokens: int
    """Tokens the server actually computed (per request: its prompt past ``num_cached_tokens``, then its generated
    gold tokens but the last)."""
    shared: int
    """Sequences whose P came from another session's identical request under the same weights (not sent)."""
    eps_truncated: int
    """ε contexts whose oldest turns were dropped to fit the scoring window (``memory_credit.plan_memory_credit``)."""
    too_long: int
    """``<mem>`` segments left without R^M because even their shortest context does not fit the window."""
    wait_s: float = 0.0
    """Wall seconds from the session's last turn to its scores: what scoring adds to the session's own time."""


@dataclass(frozen=True)
class Segment:
    """The metadata of one training row. Round-trips through ``to_extra_fields`` / ``from_extra_fields``."""

    uid: str | None
    """The prompt's ``uid`` (verl's row key ``{uid}_{session_id}_{index}``)."""
    session_id: int | None
    """The session within the prompt's ``rollout.n`` (``{session_id}``)."""
    segment_index: int
    """0-based index of the row in its session (``{index}``)."""
    policy: str
    """The context policy that produced it (``memory``, ``mem1``, ``full``)."""
    layout: SegmentLayoutName
    """How the session's turns became rows (``context.POLICY_LAYOUTS``): ``per_turn`` (one turn per row) or
    ``sequence`` (one row for the trajectory)."""
    turns: tuple[TurnRecord, ...]
    """The turns whose generated ids are in this row's response: one under ``per_turn``, all under ``sequence``."""
    task_prompt: str
    """The environment's task prompt (system message of every context and of the memory-credit contexts)."""
    questions: tuple[str, ...]
    """The episode's questions, one per objective."""
    question_text: str
    """The questions as shown to the model (``context.render_questions``)."""
    gold_answer: str | None
    """``Environment.gold_answer_text(ground_truth)``: the answer memory credit teacher-forces; None without one."""
    reward_mode: str
    """The reward mode of the episode (``rewards.REWARD_MODES``)."""
    is_last: bool
    """True on the session's last row."""
    termination: TerminationReason | None = None
    """Why the episode ended (last segment only)."""
    final_answer: str | None = None
    """The final answer when the episode ended with one (last segment only)."""
    format_valid: bool | None = None
    """Every turn valid and the last one answers (``rewards.trajectory_format_valid``; last segment only)."""
    episode: EpisodeSummary | None = None
    """Per-trajectory numbers (last segment only)."""
    answer_normalization: str = "squad"
    """The answer normalisation of the reward function (``rewards.ANSWER_NORMALIZATIONS``;
    ``mempo.reward.normalization``)."""
    tool_schemas: tuple[dict[str, Any], ...] = ()
    """The environment's tool schemas as the rollout's chat template received them (its system turn lists them);
    memory credit opens its scoring contexts with the same ones, so the trainer never builds the environment
    (a retrieval index) just to read them. () = no tools."""
    credit: SegmentCredit | None = None
    """The rollout scorer's P[ans | ·] (``mempo.credit.scorer: rollout``); None: not scored at rollout (another
    scorer, α = 0, no ``<mem>`` or no gold answer: A^T only)."""
    credit_stats: CreditStats | None = None
    """The session's scoring work under ``scorer: rollout`` (last segment only)."""

    def __post_init__(self) -> None:
        if not self.turns:
            raise ValueError("a segment holds at least one turn")
        if self.layout not in get_args(SegmentLayoutName):
            raise ValueError(f"layout={self.layout!r}; allowed: {', '.join(get_args(SegmentLayoutName))}")
        if self.layout == "per_turn" and len(self.turns) != 1:
            raise ValueError(f"a per_turn segment holds one turn, got {len(self.turns)}")
        if self.termination is not None and self.termination not in TERMINATION_REASONS:
            raise ValueError(f"termination={self.termination!r}; allowed: {', '.join(TERMINATION_REASONS)}")
        if self.is_last and (self.termination is None or self.format_valid is None or self.episode is None):
            raise ValueError("the last segment needs termination, format_valid and episode")

    @property
    def credited_turn(self) -> TurnRecord | None:
        """The turn whose ``<mem>`` this row's R^M and A^M credit: its one turn under ``per_turn``; None under
        ``sequence``, whose row holds the whole history with no single ``<mem>`` to credit (DESIGN §3: A^T only)."""
        return self.turns[0] if self.layout == "per_turn" else None

    def to_extra_fields(self) -> dict[str, Any]:
        """``{"mempo": {...}}`` plus, on the last segment, the flat reward keys ``rewards.compute_score`` reads."""
        fields: dict[str, Any] = {EXTRA_FIELDS_KEY: as_python(asdict(self))}
        if self.is_last:
            fields.update(
                final_answer=self.final_answer,
                format_valid=self.format_valid,
                reward_mode=self.reward_mode,
                answer_normalization=self.answer_normalization,
            )
        return fields

    @classmethod
    def from_extra_fields(cls, extra_fields: Mapping[str, Any]) -> Segment:
        """Rebuild from a row's ``extra_fields`` (also accepts the inner ``mempo`` dict itself)."""
        data = extra_fields.get(EXTRA_FIELDS_KEY, extra_fields)
        data = dict(as_python(data))
        data["turns"] = tuple(TurnRecord.from_dict(t) for t in data["turns"])
        data["questions"] = tuple(data["questions"])
        data["tool_schemas"] = tuple(data.get("tool_schemas") or ())
        for key, kind in (("episode", EpisodeSummary), ("credit", SegmentCredit), ("credit_stats", CreditStats)):
            if data.get(key) is not None:
                data[key] = kind(**data[key])
        return cls(**data)


# ---------------------------------------------------------------------------------------------------------------
# Token <-> character mapping of generated ids
# ---------------------------------------------------------------------------------------------------------------


def undecodable_ids(tokenizer: Any, token_ids: Sequence[int]) -> list[int]:
    """The ids outside the tokenizer's vocabulary. A fast tokenizer decodes them to "" without complaint (checked
    here: Qwen2.5's 151700 -> ""), while the model's padded vocabulary can produce them."""
    vocab_size = len(tokenizer)
    return [int(i) for i in token_ids if not 0 <= int(i) < vocab_size]


def decode_ids(tokenizer: Any, token_ids: Sequence[int]) -> str:
    """The exact text of ``token_ids``: special tokens kept, no clean-up, so character offsets are stable."""
    return tokenizer.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def memory_token_span(tokenizer: Any, response_ids: Sequence[int], char_span: tuple[int, int]) -> tuple[int, int]:
    """Token span ``[start, end)`` of the tokens whose bytes overlap ``char_span`` of ``decode_ids(response_ids)``.

    Exact on the generated ids, whatever their segmentation: a token straddling the span's edge (BPE merges such as
    ``.</`` or ``>\\n`` across a tag boundary) or a multi-byte character split over several tokens is included;
    nothing else is. Let P(k) = decode of the first k ids and c(k) the length of its common prefix with the full
    text (characters completed by the first k tokens):

        end   = min{k : c(k) >= b}                          the token completing the span's last character, + 1
        start = max{k : c(k) < a, or P(k) == text[:a]}      the number of tokens holding no byte of character a

    Both predicates are monotone in k, so each is a binary search (O(log T) decodes). A partial trailing character
    decodes to U+FFFD; an output that itself contains U+FFFD at that position could shift a bound by one token.

    Args:
        tokenizer: the Hugging Face tokenizer that produced ``response_ids``.
        response_ids: (T,) generated token ids.
        char_span: ``(a, b)`` character offsets into ``decode_ids(tokenizer, response_ids)``, a < b.

    Returns:
        ``(start, end)`` with ``0 <= start < end <= T``.
    """
    ids = list(response_ids)
    text = decode_ids(tokenizer, ids)
    a, b = char_span
    if not 0 <= a < b <= len(text):
        raise ValueError(f"char_span {char_span} is not a non-empty span of the {len(text)}-character response")

    def completed(k: int) -> tuple[int, str]:
        prefix = decode_ids(tokenizer, ids[:k])
        return _common_prefix_length(prefix, text), prefix

    def holds_no_byte_of_a(k: int) -> bool:
        count, prefix = completed(k)
        # a clean prefix ending at or before a, or one whose partial trailing character lies before a
        return count < a or (count == a and len(prefix) == a)

    lo, hi = 0, len(ids)  # start: largest k in [0, T] with holds_no_byte_of_a(k); k = 0 always holds
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if holds_no_byte_of_a(mid):
            lo = mid
        else:
            hi = mid - 1
    start = lo
    lo, hi = start + 1, len(ids)  # end: smallest k with c(k) >= b; k = T always holds
    while lo < hi:
        mid = (lo + hi) // 2
        if completed(mid)[0] >= b:
            hi = mid
        else:
            lo = mid + 1
    return start, lo
