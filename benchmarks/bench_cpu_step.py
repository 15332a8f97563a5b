"""CPU step benchmark: bring-up, cold and warm step time by phase, peak memory of verl's GRPO on the cpu platform.

    python benchmarks/bench_cpu_step.py                                  # verl GRPO baseline, 4 steps
    python benchmarks/bench_cpu_step.py --variant k3=actor_rollout_ref.actor.kl_loss_type=low_var_kl
    python benchmarks/bench_cpu_step.py --variant mempo=trainer.v1.trainer_mode=mempo,data.train_files=...

Each run is `python -m verl.trainer.main_ppo` with recipes/grpo_tiny.yaml (+ `platform=cpu` where no accelerator is
found) on the tiny offline model and the shipped sample QA set, under `run_with_watchdog`. The baseline runs first;
each `--variant NAME=OVERRIDE[,OVERRIDE...]` then runs with the baseline's overrides plus its own, in this process,
and the table gives its figures and their ratio to the baseline. Runs go one after another: each takes both cores.

Figures: bring-up = launch to the start of step 1; cold step = step 1 (vLLM and kernel warm-up); warm step = mean
of steps 2..N; phases are verl's own `timing_s/*` (gen = rollout through the agent loop and reward, old log-prob,
ref, update = actor update, weight sync = actor -> vLLM); peak tree PSS = peak of the summed proportional set size
of the run's processes (shared pages counted once); peak host memory = peak of (MemTotal - MemAvailable) above
its value at launch (includes whatever else the machine runs meanwhile).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mempo_verl.platform import cpu_platform_selected
from mempo_verl.platform.watchdog import RunResult, run_with_watchdog

REPO = Path(__file__).resolve().parents[1]
PHASES = {
    "gen": "timing_s/gen",
    "old log-prob": "timing_s/old_log_prob",
    "ref": "timing_s/ref",
    "update": "timing_s/update_actor",
    "weight sync": "timing_s/update_weights",
}
STEP = "timing_s/step"


@dataclass
class RunFigures:
    name: str
    ok: bool
    wall_s: float
    bring_up_s: float | None = None
    cold: dict[str, float] = field(default_factory=dict)  # "step" and PHASES keys, step 1
    warm: dict[str, float] = field(default_factory=dict)  # mean over steps 2..N
    peak_host_gb: float = 0.0
    peak_tree_pss_gb: float = 0.0
    error: str | None = None


def build_inputs(work: Path) -> list[str]:
    """Tiny model + shipped sample data, as Hydra overrides."""
    from mempo_verl.data.cli import main as mempo_data
    from mempo_verl.tiny.qwen_model import tiny_model_dir

    data = work / "data"
    mempo_data(["build", "--source", "sample", "--out", str(data), "--agent-name", "single_turn_agent",
                "--max-train-rows", "64", "--max-test-rows", "4"])  # fmt: skip
    return [
        f"actor_rollout_ref.model.path={tiny_model_dir()}",
        f"data.train_files={data / 'train.parquet'}",
        f"data.val_files={data / 'test.parquet'}",
    ]


def step_metrics(path: Path) -> dict[int, dict[str, float]]:
    metrics: dict[int, dict[str, float]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            metrics.setdefault(row["step"], {}).update(row["data"])
    return metrics


def bring_up_seconds(result: RunResult, step1_seconds: float) -> float | None:
    """Launch to the start of step 1: when verl's console logger printed step 1, minus that step's duration."""
    with open(result.log_path, errors="replace") as log:
        for t, line in zip(result.line_times, log, strict=False):
            if re.search(r"\bstep:1 - ", line):
                return t - step1_seconds
    return None


def figures(name: str, result: RunResult, metrics: dict[int, dict[str, float]]) -> RunFigures:
    fig = RunFigures(name, result.ok, result.wall_s, peak_host_gb=result.peak_host_used_bytes / 1e9,
                     peak_tree_pss_gb=result.peak_tree_pss_bytes / 1e9)  # fmt: skip
    if not result.ok:
        fig.error = result.describe()
    if 1 in metrics:
        fig.cold = {"step": metrics[1][STEP], **{p: metrics[1].get(k, 0.0) for p, k in PHASES.items()}}
        fig.bring_up_s = bring_up_seconds(result, metrics[1][STEP])
    warm_steps = [metrics[s] for s in sorted(metrics) if s > 1]
    if warm_steps:
        keys = {"step": STEP, **PHASES}
        fig.warm = {p: sum(m.get(k, 0.0) for m in warm_steps) / len(warm_steps) for p, k in keys.items()}
    return fig


def run_one(name: str, overrides: list[str], work: Path, steps: int, timeout_s: float) -> RunFigures:
    metrics_path = work / f"{name}.metrics.jsonl"
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={REPO / 'recipes'}", "--config-name=grpo_tiny",
        *(["platform=cpu"] if cpu_platform_selected() else []),
        f"trainer.total_training_steps={steps}", "trainer.save_freq=-1", f"trainer.default_local_dir={work / name}",
        f"hydra.run.dir={work / ('hydra-' + name)}", "trainer.experiment_name=" + name, *overrides,
    ]  # fmt: skip
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "VERL_FILE_LOGGER_PATH": str(metrics_path), "PYTHONUNBUFFERED": "1"}
    print(f"[bench] {name}: running {steps} steps (log {work / (name + '.log')})", flush=True)
    result = run_with_watchdog(cmd, timeout_s, work / f"{name}.log", env=env, cwd=work)
    return figures(name, result, step_metrics(metrics_path))


def table(runs: list[RunFigures]) -> str:
    base = runs[0]
    rows: list[tuple[str, list[float | None]]] = [("bring-up (s)", [r.bring_up_s for r in runs])]
    for label, part in (("cold step 1 (s)", "cold"), ("warm step (s)", "warm")):
        rows.append((label, [getattr(r, part).get("step") for r in runs]))
        rows += [(f"  {p}", [getattr(r, part).get(p) for r in runs]) for p in PHASES]
    rows += [
        ("peak host memory (GB)", [r.peak_host_gb for r in runs]),
        ("peak tree PSS (GB)", [r.peak_tree_pss_gb for r in runs]),
        ("run wall time (s)", [r.wall_s for r in runs]),
    ]
    header = f"{'':<24}" + "".join(f"{r.name:>12}" for r in runs) + "".join(f"{'x ' + r.name:>12}" for r in runs[1:])
    lines = [header, "-" * len(header)]
    for label, values in rows:
        cells = "".join(f"{v:>12.2f}" if v is not None else f"{'-':>12}" for v in values)
        b = values[0]
        ratios = "".join(f"{v / b:>12.2f}" if v is not None and b else f"{'-':>12}" for v in values[1:])
        lines.append(f"{label:<24}{cells}{ratios}")
    lines += [f"{r.name}: FAILED: {r.error}" for r in runs if not r.ok]
    if base.ok:
        lines.append("(x NAME: variant / baseline, same machine, same process, one run after the other)")
    return "\n".join(lines)


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name or not overrides:
        raise argparse.ArgumentTypeError(f"expected NAME=OVERRIDE[,OVERRIDE...], got {text!r}")
    return name, overrides.split(",")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps per run: 1 cold + (steps - 1) warm")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[], help="NAME=OVERRIDE[,...]")
    parser.add_argument("--timeout", type=float, default=600, help="wall-clock limit per run, seconds")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep logs and metrics here (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_cpu_step-"))
    work.mkdir(parents=True, exist_ok=True)
    inputs = build_inputs(work)
    print(f"[bench] load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    runs = [run_one("baseline", inputs, work, args.steps, args.timeout)]
    for name, overrides in args.variant:
        runs.append(run_one(name, [*inputs, *overrides], work, args.steps, args.timeout))
    print(table(runs))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
