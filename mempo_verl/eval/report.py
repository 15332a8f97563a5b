"""Reports of a run: records grouped into summary rows (``summarize``), ``summary.csv`` (one row per method,
dataset and k), ``summary.md`` (the methods side by side, then every metric), the plots, and the ``--compare``
report of two runs.

Numbers: EM, F1, all-EM, format errors and termination shares in % (EM / F1 summed over objectives instead when
the run's objective score is ``sum``); TT, PT and memory in tokens of the model's tokenizer.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

from mempo_verl.eval.config import ObjectiveScore
from mempo_verl.eval.metrics import SummaryRow, summarize_group
from mempo_verl.eval.records import EvalRecord, RecordStore
from mempo_verl.segments import TERMINATION_REASONS

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"

OBJECTIVE_UNITS: dict[ObjectiveScore, str] = {
    "mean": "mean over objectives x 100",
    "sum": "summed over objectives (MEM1)",
}
"""How ``summary.md`` words each objective score."""

ALL_DATASETS = "all"
"""The dataset name of rows pooled over datasets (``summarize(..., by_dataset=False)``)."""

SIDE_BY_SIDE: tuple[tuple[str, str], ...] = (("f1", "F1"), ("em", "EM"), ("tt", "TT"), ("pt", "PT"))
"""The metrics of the side-by-side table (column label per field)."""

DETAIL: tuple[tuple[str, str], ...] = (
    ("examples", "n"),
    ("errors", "errors"),
    ("em", "EM"),
    ("f1", "F1"),
    ("all_em", "all-EM %"),
    ("tt", "TT"),
    ("pt", "PT"),
    ("turns", "turns"),
    ("format_error_rate", "format err %"),
    ("memory_tokens", "mem tokens"),
    ("env_failures", "env fails"),
)
"""The metrics of the detailed table."""


def summarize(
    records: Sequence[EvalRecord], mode: ObjectiveScore = "mean", *, by_dataset: bool = True
) -> list[SummaryRow]:
    """Aggregate records per (method, dataset, k), or per (method, k) pooling datasets (dataset ``"all"``).

    Rows come sorted by objective count, then method in first-seen order; examples are taken in key order, so
    the same set of records gives the same floats however the run was split (a resumed run included).
    """
    method_order = {m: i for i, m in enumerate(dict.fromkeys(r.method for r in records))}
    groups: dict[tuple[str, str, int], list[EvalRecord]] = {}
    for record in sorted(records, key=lambda r: r.key):
        dataset = record.dataset if by_dataset else ALL_DATASETS
        groups.setdefault((record.method, dataset, record.objectives), []).append(record)
    rows = []
    for (method, dataset, k), group in sorted(groups.items(), key=lambda g: (g[0][2], method_order[g[0][0]], g[0][1])):
        finished = [r.metrics for r in group if r.metrics is not None]
        rows.append(summarize_group(method, dataset, k, finished, len(group) - len(finished), mode))
    return rows


def _fmt(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "–" if math.isnan(value) else f"{value:.1f}"


def csv_rows(rows: Sequence[SummaryRow]) -> list[dict[str, object]]:
    """Flat dicts: the ``SummaryRow`` fields, termination shares as ``termination_<reason>`` columns."""
    flat = []
    for row in rows:
        data = {f.name: getattr(row, f.name) for f in fields(row) if f.name != "termination"}
        data.update({f"termination_{r}": row.termination[r] for r in TERMINATION_REASONS})
        flat.append(data)
    return flat


def write_csv(rows: Sequence[SummaryRow], path: Path) -> None:
    columns = [f.name for f in fields(SummaryRow) if f.name != "termination"]
    columns += [f"termination_{r}" for r in TERMINATION_REASONS]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for data in csv_rows(rows):
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in data.items()})


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def side_by_side(rows: Sequence[SummaryRow]) -> list[str]:
    """One line per k, one column per (metric, method): the methods next to each other (pooled rows)."""
    methods = list(dict.fromkeys(r.method for r in rows))
    by_key = {(r.objectives, r.method): r for r in rows}
    header = ["k"] + [f"{label} {m}" for _, label in SIDE_BY_SIDE for m in methods]
    body = []
    for k in sorted({r.objectives for r in rows}):
        cells = [str(k)]
        for name, _ in SIDE_BY_SIDE:
            cells += [_fmt(getattr(by_key[(k, m)], name)) if (k, m) in by_key else "" for m in methods]
        body.append(cells)
    return _table(header, body)


def detail(rows: Sequence[SummaryRow]) -> list[str]:
    """Every metric and the termination reasons that occurred, one line per (k, method, dataset)."""
    reasons = [r for r in TERMINATION_REASONS if any(row.termination[r] > 0 for row in rows)]
    header = ["k", "method", "dataset"] + [label for _, label in DETAIL] + [f"{r} %" for r in reasons]
    body = [
        [str(row.objectives), row.method, row.dataset]
        + [_fmt(getattr(row, name)) for name, _ in DETAIL]
        + [_fmt(row.termination[r]) for r in reasons]
        for row in rows
    ]
    return _table(header, body)


def markdown(records: Sequence[EvalRecord], mode: ObjectiveScore) -> str:
    """``summary.md``: the side-by-side table (datasets pooled per k), the detailed table, the failed examples."""
    lines = [
        "# mempo-eval summary",
        "",
        f"EM / F1: {OBJECTIVE_UNITS[mode]}. TT = Σ turns (context + generated tokens), PT = max over turns; "
        "means over examples.",
        "",
        *side_by_side(summarize(records, mode, by_dataset=False)),
        "",
        "## All metrics",
        "",
        *detail(summarize(records, mode)),
    ]
    failed = [r for r in records if r.error is not None]
    if failed:
        lines += ["", f"## Failed examples ({len(failed)})", ""]
        lines += [f"- `{r.key}`: {r.error.kind}: {r.error.message[:200]}" for r in failed]
    return "\n".join(lines) + "\n"


def write_reports(records: Sequence[EvalRecord], mode: ObjectiveScore, out_dir: Path) -> dict[str, Path]:
    """``summary.csv``, ``summary.md`` and the plots of ``records`` into ``out_dir``; returns the paths by name."""
    from mempo_verl.eval.plots import write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {SUMMARY_CSV: out_dir / SUMMARY_CSV, SUMMARY_MD: out_dir / SUMMARY_MD}
    write_csv(summarize(records, mode), files[SUMMARY_CSV])
    files[SUMMARY_MD].write_text(markdown(records, mode), encoding="utf-8")
    files.update(write_plots(summarize(records, mode, by_dataset=False), out_dir))
    return files


# ----------------------------------------------------------------------------------------------- compare


def load_run(run_dir: str | Path) -> list[EvalRecord]:
    """The last record of every key in a run folder's ``traces.jsonl``."""
    path = Path(run_dir) / "traces.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no traces.jsonl: not a mempo-eval output folder")
    return list(RecordStore(path).load().values())


def compare(run_a: str | Path, run_b: str | Path, mode: ObjectiveScore = "mean") -> str:
    """Markdown: per (method, k), each side-by-side metric of run A, run B and B - A, on the examples both runs
    finished (so a difference is never an artefact of different example sets); examples finished by only one run
    are counted."""
    a = {r.key: r for r in load_run(run_a) if r.status == "ok"}
    b = {r.key: r for r in load_run(run_b) if r.status == "ok"}
    shared = sorted(a.keys() & b.keys())
    rows_a = summarize([a[k] for k in shared], mode, by_dataset=False)
    rows_b = {(r.method, r.objectives): r for r in summarize([b[k] for k in shared], mode, by_dataset=False)}
    header = ["k", "method", "n"] + [f"{label} {s}" for _, label in SIDE_BY_SIDE for s in ("A", "B", "B-A")]
    body = []
    for row_a in rows_a:
        row_b = rows_b[(row_a.method, row_a.objectives)]
        cells = [str(row_a.objectives), row_a.method, str(row_a.examples)]
        for name, _ in SIDE_BY_SIDE:
            va, vb = getattr(row_a, name), getattr(row_b, name)
            cells += [_fmt(va), _fmt(vb), f"{vb - va:+.1f}"]
        body.append(cells)
    lines = [
        "# mempo-eval compare",
        "",
        f"A = `{run_a}`, B = `{run_b}`: {len(shared)} examples finished in both; "
        f"{len(a.keys() - b.keys())} only in A, {len(b.keys() - a.keys())} only in B.",
        "",
        *_table(header, body),
    ]
    return "\n".join(lines) + "\n"


def summary_dicts(rows: Sequence[SummaryRow]) -> list[dict[str, object]]:
    """``SummaryRow``s as plain dicts (for JSON output and tests)."""
    return [asdict(r) for r in rows]
