"""Metric arithmetic on hand-made episodes (mempo_verl/eval/metrics.py): EM / F1 per objective, TT and PT, memory
length, format errors and terminations, aggregated per method, dataset and k."""

import math

import pytest

from mempo_verl.eval.metrics import example_metrics, objective_score, token_totals
from mempo_verl.eval.records import EvalRecord, ExampleError
from mempo_verl.eval.report import summarize
from mempo_verl.rewards import score_answer
from mempo_verl.segments import EpisodeSummary, Segment
from mempo_verl.testing.turns import turn_record

GOLDS = [["Paris"], ["1889", "in the year 1889"]]


def turn(index, prompt, completion, mem=None, start=0):
    """A turn record with ``prompt`` context and ``completion`` generated tokens; ``mem`` = its <mem> length."""
    return turn_record(
        index,
        "…",
        memory="m" if mem else None,
        action="answer",
        mem_span=(start, start + mem) if mem else None,
        response_span=(start, start + completion),
        prompt_tokens=prompt,
        completion_tokens=completion,
    )


def episode(policy, turns_per_segment, *, answer, termination="answer"):
    """Segments of one episode; the last carries the verdict (the numbers there are not read by the eval)."""
    segments = []
    for i, turns in enumerate(turns_per_segment):
        last = i == len(turns_per_segment) - 1
        verdict = dict(
            termination=termination,
            final_answer=answer,
            format_valid=termination == "answer",
            episode=EpisodeSummary(num_turns=0, total_tokens=0, peak_tokens=0, env_failures=1, memory_truncations=0),
        )
        segments.append(
            Segment(
                uid="u",
                session_id=0,
                segment_index=i,
                policy=policy,
                layout="sequence" if policy == "full" else "per_turn",
                turns=tuple(turns),
                task_prompt="task",
                questions=("q1", "q2"),
                question_text="Question 1: q1\nQuestion 2: q2",
                gold_answer="Paris; 1889",
                reward_mode="all_em",
                is_last=last,
                **(verdict if last else {}),
            )
        )
    return segments


# memory: three turns, one per segment; (context, generated) = (100, 20), (120, 30), (110, 10)
MEMORY = episode(
    "memory", [[turn(0, 100, 20, mem=8)], [turn(1, 120, 30, mem=12)], [turn(2, 110, 10, mem=5)]], answer="Paris; 1999"
)
# full: one segment; turn 1's context is turn 0's context + its 20 generated + 15 information tokens
FULL = episode("full", [[turn(0, 100, 20, mem=6), turn(1, 135, 25, mem=4, start=35)]], answer="Paris; in 1889")
# a malformed first turn ends the episode without an answer
BROKEN = episode("memory", [[turn(0, 100, 40)]], answer=None, termination="format_error")


def metrics(segments):
    return example_metrics(segments, score_answer(segments[-1].final_answer, GOLDS))


def test_token_totals_are_sum_and_max_of_context_plus_generated():
    assert token_totals(MEMORY[0].turns + MEMORY[1].turns + MEMORY[2].turns) == (390, 150)  # 120 + 150 + 120
    assert token_totals(FULL[0].turns) == (280, 160)  # 120 + 160: under full the context holds the history
    assert token_totals([]) == (0, 0)


def test_example_metrics_memory_episode():
    m = metrics(MEMORY)
    assert (m.em, m.f1) == ((1.0, 0.0), (1.0, 0.0))  # "Paris" right, "1999" wrong
    assert (m.total_tokens, m.peak_tokens, m.num_turns) == (390, 150, 3)
    assert m.memory_tokens == (8, 12, 5)
    assert (m.all_em, m.format_valid, m.format_error, m.termination) == (False, True, False, "answer")
    assert m.env_failures == 1  # read from the last segment's episode summary


def test_example_metrics_full_episode_partial_f1():
    m = metrics(FULL)
    assert m.em == (1.0, 0.0)  # "in 1889" is not an alias of objective 2
    # best alias: {in, 1889} vs "in the year 1889" -> {in, year, 1889} (article dropped): P = 1, R = 2/3, F1 = 0.8
    # (against "1889": P = 1/2, R = 1, F1 = 2/3)
    assert m.f1 == pytest.approx((1.0, 0.8))
    assert (m.total_tokens, m.peak_tokens, m.num_turns, m.memory_tokens) == (280, 160, 2, (6, 4))


def test_example_metrics_broken_episode():
    m = metrics(BROKEN)
    assert (m.em, m.f1, m.final_answer) == ((0.0, 0.0), (0.0, 0.0), None)
    assert (m.format_error, m.format_valid, m.memory_tokens) == (True, False, ())


def test_objective_score_mean_x100_or_mem1_sum():
    assert objective_score((1.0, 2 / 3), "mean") == pytest.approx(100 * 5 / 6)
    assert objective_score((1.0, 2 / 3), "sum") == pytest.approx(5 / 3)
    assert objective_score((1.0, 0.0, 1.0, 1.0), "sum") == 3.0  # MEM1 counts the objectives answered


def record(key, method, segments=None, dataset="d", error=False):
    common = dict(key=key, method=method, dataset=dataset, objectives=2, example_id=key, seed=0)
    if error:
        return EvalRecord(**common, status="error", error=ExampleError("unreachable", "down"))
    return EvalRecord(**common, status="ok", metrics=metrics(segments))


def test_summarize_per_method_dataset_and_k():
    records = [
        record("a", "memory", MEMORY),
        record("b", "memory", BROKEN),
        record("c", "memory", error=True),
        record("d", "full", FULL),
        record("e", "full", FULL, dataset="other"),
    ]
    memory, full_d, full_other = summarize(records)
    assert (memory.method, memory.dataset, memory.objectives) == ("memory", "d", 2)
    assert (memory.examples, memory.errors) == (2, 1)  # the failed example is counted, not averaged
    assert memory.em == pytest.approx((50 + 0) / 2)  # per example: mean over objectives x 100; then over examples
    assert memory.f1 == pytest.approx(25.0)
    assert memory.tt == pytest.approx((390 + 140) / 2) and memory.pt == pytest.approx((150 + 140) / 2)
    assert memory.turns == 2.0 and memory.format_error_rate == 50.0 and memory.all_em == 0.0
    assert memory.memory_tokens == pytest.approx(25 / 3)  # over the three <mem> blocks written, not per example
    assert memory.termination["answer"] == 50.0 and memory.termination["format_error"] == 50.0
    assert memory.termination["max_turns"] == 0.0
    assert full_d.f1 == pytest.approx(100 * (1.0 + 0.8) / 2)
    assert (full_other.dataset, full_other.examples) == ("other", 1)
    # pooled over datasets: one row per (method, k)
    pooled = summarize(records, by_dataset=False)
    assert [(r.method, r.dataset, r.examples) for r in pooled] == [("memory", "all", 2), ("full", "all", 2)]
    # MEM1's summed score: EM 1 + 0 and 0 + 0 -> mean 0.5 objectives right
    assert summarize(records, "sum")[0].em == pytest.approx(0.5)


def test_summary_of_a_group_with_only_errors_is_nan_not_zero():
    (row,) = summarize([record("c", "memory", error=True)])
    assert (row.examples, row.errors) == (0, 1)
    assert math.isnan(row.f1) and math.isnan(row.tt) and math.isnan(row.memory_tokens)


def test_summary_does_not_depend_on_record_order():
    records = [record(str(i), "memory", seg) for i, seg in enumerate([MEMORY, FULL, BROKEN, FULL, MEMORY])]
    assert summarize(records) == summarize(list(reversed(records)))
