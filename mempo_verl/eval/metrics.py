"""Evaluation metrics: per example from the episode's segments and answer score, aggregated per method, dataset and
objective count. Pure functions of dataclasses (STYLE §1): no I/O, no model.

Per example (k objectives, turns t = 0..n-1 with context c_t and generation g_t tokens, model tokenizer):

    EM_i, F1_i   the final answer's part i against objective i's aliases (``Environment.score``: SQuAD EM / F1)
    TT           Σ_t (c_t + g_t)          total tokens the model processed (under ``full`` c_t is the whole history)
    PT           max_t (c_t + g_t)        peak tokens of one call: the context the model must hold
    memory       tokens of each ``<mem>`` block written (tags included)

Aggregated over the examples of a group (errors are counted, not averaged; ``report.summarize`` forms the groups):

    EM, F1       mean over examples of (1/k) Σ_i EM_i x 100 (MemPO's tables), or of Σ_i EM_i (MEM1, ``sum``)
    all-EM       % of examples with every objective exactly right (R^T's condition, format aside)
    TT, PT, turns   means over examples;  memory   mean over all ``<mem>`` blocks written
    format errors   % of examples that ended on a malformed turn (``FORMAT_ERROR_TERMINATIONS``)
    termination     % of examples per ``TerminationReason``
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mempo_verl.eval.config import ObjectiveScore
from mempo_verl.rewards import AnswerScore
from mempo_verl.segments import TERMINATION_REASONS, Segment
from mempo_verl.turns import TurnRecord

FORMAT_ERROR_TERMINATIONS: frozenset[str] = frozenset({"format_error", "unknown_tool", "undecodable", "truncated"})
"""Terminations caused by a malformed turn (the model broke the format), as opposed to budgets (``max_turns``,
``prompt_budget``) and answers."""


@dataclass(frozen=True)
class ExampleMetrics:
    """The numbers of one evaluated example."""

    em: tuple[float, ...]
    """Exact match per objective (0 or 1), length k."""
    f1: tuple[float, ...]
    """Token F1 per objective, length k."""
    all_em: bool
    """Every objective exactly right with exactly k answer parts."""
    final_answer: str | None
    """The answer the episode ended on; None when it ended otherwise."""
    format_valid: bool
    """Every turn valid and the last one answers (``Segment.format_valid``)."""
    termination: str
    """``TerminationReason`` of the episode."""
    num_turns: int
    """Model turns."""
    total_tokens: int
    """TT = Σ over turns of context + generated tokens."""
    peak_tokens: int
    """PT = max over turns of context + generated tokens."""
    memory_tokens: tuple[int, ...]
    """Tokens of each ``<mem>`` block written, in turn order (turns without one left out)."""
    env_failures: int
    """Tool calls whose observation came back failed."""
    memory_truncations: int
    """Memories cut to their token budget before a later turn saw them."""

    @property
    def num_objectives(self) -> int:
        return len(self.em)

    @property
    def format_error(self) -> bool:
        """The episode ended on a malformed turn."""
        return self.termination in FORMAT_ERROR_TERMINATIONS


def token_totals(turns: Sequence[TurnRecord]) -> tuple[int, int]:
    """(TT, PT) of an episode's turns: Σ and max over turns of ``prompt_tokens + completion_tokens``."""
    sizes = [t.prompt_tokens + t.completion_tokens for t in turns]
    return sum(sizes), max(sizes, default=0)


def example_metrics(segments: Sequence[Segment], score: AnswerScore) -> ExampleMetrics:
    """The metrics of one episode.

    Args:
        segments: the episode's segments in order (one per turn under ``memory``/``mem1``, one under ``full``).
        score: ``Environment.score(final_answer, ground_truth)`` of the episode.
    """
    last = segments[-1]
    if not last.is_last:
        raise ValueError("the segments of an episode must end with its last segment")
    turns = [turn for segment in segments for turn in segment.turns]
    total, peak = token_totals(turns)
    return ExampleMetrics(
        em=tuple(score.em),
        f1=tuple(score.f1),
        all_em=not score.count_mismatch and all(e == 1.0 for e in score.em),
        final_answer=last.final_answer,
        format_valid=bool(last.format_valid),
        termination=str(last.termination),
        num_turns=len(turns),
        total_tokens=total,
        peak_tokens=peak,
        memory_tokens=tuple(t.memory_tokens for t in turns if t.mem_span is not None),
        env_failures=last.episode.env_failures,
        memory_truncations=last.episode.memory_truncations,
    )


def _mean_x100(values: Sequence[float]) -> float:
    """(1/k) Σ_i v_i x 100: the MemPO paper's per-objective average."""
    return 100.0 * sum(values) / len(values)


def _sum(values: Sequence[float]) -> float:
    """Σ_i v_i: MEM1's summed multi-objective score (range 0..k)."""
    return float(sum(values))


OBJECTIVE_REDUCERS: dict[ObjectiveScore, Callable[[Sequence[float]], float]] = {"mean": _mean_x100, "sum": _sum}
"""How an example's per-objective EM / F1 become one number (``EvalConfig.objective_score``)."""


def objective_score(values: Sequence[float], mode: ObjectiveScore) -> float:
    """An example's EM or F1 under ``mode``: mean x 100 or sum over its objectives."""
    return OBJECTIVE_REDUCERS[mode](values)


@dataclass(frozen=True)
class SummaryRow:
    """The aggregate of one (method, dataset, objective count). Metric fields are NaN when no example finished."""

    method: str
    dataset: str
    objectives: int
    examples: int
    """Examples that finished (the averages are over these)."""
    errors: int
    """Examples that could not be evaluated (backend failures, unreadable rows): reported, never averaged."""
    em: float
    f1: float
    all_em: float
    """% of examples with every objective right."""
    tt: float
    pt: float
    turns: float
    format_error_rate: float
    """% of examples that ended on a malformed turn."""
    memory_tokens: float
    """Mean tokens of a ``<mem>`` block, over every block written (NaN when none was)."""
    env_failures: float
    termination: dict[str, float]
    """% of examples per termination reason (every ``TERMINATION_REASONS`` key)."""


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarize_group(
    method: str, dataset: str, objectives: int, metrics: Sequence[ExampleMetrics], errors: int, mode: ObjectiveScore
) -> SummaryRow:
    """One ``SummaryRow`` from the finished examples of a group (in a fixed order: the sums are order-exact)."""
    memory = [n for m in metrics for n in m.memory_tokens]
    return SummaryRow(
        method=method,
        dataset=dataset,
        objectives=objectives,
        examples=len(metrics),
        errors=errors,
        em=_mean([objective_score(m.em, mode) for m in metrics]),
        f1=_mean([objective_score(m.f1, mode) for m in metrics]),
        all_em=_mean([100.0 * m.all_em for m in metrics]),
        tt=_mean([m.total_tokens for m in metrics]),
        pt=_mean([m.peak_tokens for m in metrics]),
        turns=_mean([m.num_turns for m in metrics]),
        format_error_rate=_mean([100.0 * m.format_error for m in metrics]),
        memory_tokens=_mean(memory),
        env_failures=_mean([m.env_failures for m in metrics]),
        termination={r: _mean([100.0 * (m.termination == r) for m in metrics]) for r in TERMINATION_REASONS},
    )
