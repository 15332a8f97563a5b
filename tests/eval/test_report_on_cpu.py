"""Reports (mempo_verl/eval/report.py, plots.py): the CSV and Markdown tables, the PNG plots read back, --compare."""

import csv
import math

import pytest

from mempo_verl.eval.cli import main
from mempo_verl.eval.metrics import ExampleMetrics
from mempo_verl.eval.plots import PLOTS, series
from mempo_verl.eval.records import EvalRecord, ExampleError, RecordStore
from mempo_verl.eval.report import compare, markdown, summarize, write_reports


def metrics(f1, tt, pt, termination="answer"):
    """An example with F1 ``f1`` on each of its objectives (EM = 1 iff F1 = 1)."""
    return ExampleMetrics(
        em=tuple(float(v == 1.0) for v in f1), f1=tuple(f1), all_em=all(v == 1.0 for v in f1), final_answer="a",
        format_valid=termination == "answer", termination=termination, num_turns=2, total_tokens=tt,
        peak_tokens=pt, memory_tokens=(10, 20), env_failures=0, memory_truncations=0,
    )  # fmt: skip


def record(method, k, i, m=None):
    key = f"{method}|d/k{k}/{i}"
    common = dict(key=key, method=method, dataset="d", objectives=k, example_id=f"d/k{k}/{i}", seed=0)
    if m is None:
        return EvalRecord(**common, status="error", error=ExampleError("timeout", "no answer within 1 s"))
    return EvalRecord(**common, status="ok", metrics=m)


# memory: flat peak, full: growing; F1 falls with k for both
RECORDS = [
    record("memory", 1, 0, metrics([1.0], 300, 200)),
    record("memory", 1, 1, metrics([0.5], 500, 200)),
    record("memory", 4, 0, metrics([1.0, 0.0, 0.5, 0.5], 900, 250)),
    record("full", 1, 0, metrics([1.0], 400, 300)),
    record("full", 1, 1, metrics([0.0], 400, 300, termination="format_error")),
    record("full", 4, 0, metrics([0.0, 0.0, 0.5, 0.5], 2000, 1200)),
    record("full", 4, 1),
]


def test_csv_has_one_row_per_method_dataset_and_k(tmp_path):
    write_reports(RECORDS, "mean", tmp_path)
    with (tmp_path / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["objectives"]) for r in rows] == [("memory", "1"), ("full", "1"), ("memory", "4"),
                                                             ("full", "4")]  # fmt: skip
    memory_1, full_1, _, full_4 = rows
    assert float(memory_1["f1"]) == 75.0 and float(memory_1["tt"]) == 400.0 and float(memory_1["pt"]) == 200.0
    assert float(full_1["format_error_rate"]) == 50.0 and float(full_1["termination_format_error"]) == 50.0
    assert (full_4["examples"], full_4["errors"], float(full_4["f1"])) == ("1", "1", 25.0)
    assert float(memory_1["memory_tokens"]) == 15.0


def test_markdown_puts_the_methods_side_by_side():
    text = markdown(RECORDS, "mean")
    header, _, k1, k4 = text.split("\n\n")[2].splitlines()
    assert header.startswith("| k | F1 memory | F1 full | EM memory | EM full | TT memory | TT full |")
    assert k1 == "| 1 | 75.0 | 50.0 | 50.0 | 50.0 | 400.0 | 400.0 | 200.0 | 300.0 |"
    assert k4 == "| 4 | 50.0 | 25.0 | 25.0 | 0.0 | 900.0 | 2000.0 | 250.0 | 1200.0 |"
    assert "## Failed examples (1)" in text and "`full|d/k4/1`: timeout: no answer within 1 s" in text
    assert "summed over objectives (MEM1)" in markdown(RECORDS, "sum")


def test_plots_open_and_draw_the_table(tmp_path):
    from matplotlib.image import imread

    files = write_reports(RECORDS, "mean", tmp_path)
    pooled = summarize(RECORDS, by_dataset=False)
    for metric, (_, name) in PLOTS.items():
        image = imread(files[name])
        assert image.shape == (360, 500, 4)  # 5 x 3.6 in at 100 dpi, RGBA
        assert image[..., :3].std() > 0.05  # not a blank canvas
        # the lines are the side-by-side table's numbers
        table = {(r.method, r.objectives): getattr(r, metric) for r in pooled}
        for method, (ks, values) in series(pooled, metric).items():
            assert ks == (1, 4) and values == tuple(table[(method, k)] for k in ks)
    assert series(pooled, "f1")["full"][1] == (50.0, 25.0)


def test_a_group_without_results_is_left_out_of_its_line():
    rows = summarize([record("memory", 1, 0, metrics([1.0], 1, 1)), record("memory", 2, 0)], by_dataset=False)
    assert math.isnan(rows[1].f1) and series(rows, "f1") == {"memory": ((1,), (100.0,))}


def test_compare_two_runs_on_the_examples_both_finished(tmp_path, capsys):
    for name, records in (("a", RECORDS), ("b", [*RECORDS[:2], record("memory", 1, 2, metrics([1.0], 1, 1))])):
        store = RecordStore(tmp_path / name / "traces.jsonl")
        for r in records:
            store.append(r)
    # b's memory|k1 example 1 improves: replace it (the last line of a key wins)
    RecordStore(tmp_path / "b" / "traces.jsonl").append(record("memory", 1, 1, metrics([1.0], 300, 100)))
    text = compare(tmp_path / "a", tmp_path / "b")
    assert "2 examples finished in both; 4 only in A, 1 only in B." in text
    (line,) = [row for row in text.splitlines() if row.startswith("| 1 | memory |")]
    # F1 A 75 -> B 100 (+25), EM 50 -> 100, TT 400 -> 300, PT 200 -> 150
    assert (
        line == "| 1 | memory | 2 | 75.0 | 100.0 | +25.0 | 50.0 | 100.0 | +50.0 | 400.0 | 300.0 | -100.0 | "
        "200.0 | 150.0 | -50.0 |"
    )
    assert main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c.md")]) == 0
    assert (tmp_path / "c.md").read_text() == text and text in capsys.readouterr().out


def test_report_rewrites_a_run_with_mem1_sums(tmp_path):
    store = RecordStore(tmp_path / "traces.jsonl")
    for r in RECORDS:
        store.append(r)
    assert main(["--report", str(tmp_path), "--objective-score", "sum"]) == 0
    with (tmp_path / "summary.csv").open() as f:
        memory_4 = list(csv.DictReader(f))[2]
    assert float(memory_4["f1"]) == pytest.approx(2.0) and float(memory_4["em"]) == 1.0  # 1 + 0 + .5 + .5; 1 right
