"""Step split: one warm training step's phases for MemPO, MemPO with alpha = 0 and other runs, with their ratios.

    python -m benchmarks.bench_step_split alpha0=runs/tiny_world/seed0_alpha0 mempo=runs/tiny_world/seed0_alpha1
    python -m benchmarks.bench_step_split --last-step 5 grpo=runs/grpo alpha0=... mempo=...   # steps 2-5 of each

Reads the runs' own ``metrics.jsonl`` (verl's ``timing_s/*``, one line a step; ``python -m mempo_verl.tiny.experiment``
writes one per run). The first run named is the baseline; every figure is the mean over the warm steps (2..N: step 1
carries vLLM's and the kernels' warm-up, and steps that saved a checkpoint or validated are kept, since their extra
phases are listed apart). The runs of one experiment share the machine, the prompts and the rollout count; they ran
one after another, so other load on the machine shows as noise: compare ratios, not seconds across tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import header, markdown_table
from mempo_verl.run_summary import read_metrics

PHASES = {
    "gen": "timing_s/gen",
    "old log-prob": "timing_s/old_log_prob",
    "ref": "timing_s/ref",
    "memory credit": "timing_s/memory_credit",
    "adv": "timing_s/adv",
    "update": "timing_s/update_actor",
    "weight sync": "timing_s/update_weights",
    "step": "timing_s/step",
}


TOKENS = "perf/total_num_tokens"
"""verl's count of the step's tokens (prompt + response of every row): sessions that sample more turns cost more
everywhere, so runs whose sessions differ in length are compared per token too."""


def warm_means(run_dir: Path, last_step: int | None = None) -> dict[str, float]:
    """Mean of each phase over the run's steps 2..N, N = ``last_step`` or its last (a phase a step did not log
    counts 0 s for it), the mean ``tokens`` a step, and ``step / 1k tokens``: the summed step time over the summed
    tokens (NaN when the run logged no token count)."""
    metrics = read_metrics(run_dir / "metrics.jsonl")
    last = last_step if last_step is not None else max(metrics, default=0)
    steps = [m for step, m in sorted(metrics.items()) if 2 <= step <= last and "timing_s/step" in m]
    if not steps:
        raise SystemExit(f"{run_dir}: no warm step (2..N) with timing_s/step in metrics.jsonl")
    means = {name: sum(m.get(key, 0.0) for m in steps) / len(steps) for name, key in PHASES.items()}
    tokens = sum(m.get(TOKENS, 0.0) for m in steps)
    per_k = 1000 * sum(m["timing_s/step"] for m in steps) / tokens if tokens else float("nan")
    return means | {"tokens": tokens / len(steps), "step / 1k tokens": per_k, "warm steps": float(len(steps))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR, the baseline first")
    parser.add_argument("--last-step", type=int, help="average steps 2..N of every run (default: all its steps)")
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.runs:
        name, sep, folder = spec.partition("=")
        if not sep:
            raise SystemExit(f"{spec!r}: expected NAME=RUN_DIR")
        runs[name] = warm_means(Path(folder), args.last_step)
    base_name, base = next(iter(runs.items()))
    rows = []
    for phase in [*PHASES, "tokens", "step / 1k tokens"]:
        cells = [phase]
        for name, means in runs.items():
            cells.append(f"{means[phase]:,.0f}" if phase == "tokens" else f"{means[phase]:.2f}")
            if name != base_name:
                cells.append(f"{means[phase] / base[phase]:.2f}" if base[phase] >= 0.01 else "-")
        rows.append(cells)
    counts = ["warm steps"]
    for name, means in runs.items():
        counts += [f"{int(means['warm steps'])}"] + ([] if name == base_name else [""])
    rows.append(counts)
    columns = ["phase (s)"]
    for name in runs:
        columns += [name] if name == base_name else [name, f"{name} / {base_name}"]
    print(header("Step split (warm steps)"))
    print(markdown_table(columns, rows))


if __name__ == "__main__":
    main()
