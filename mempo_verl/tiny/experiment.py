"""The tiny-world learning experiment: SFT, then MemPO (alpha = 1) and GRPO in memory format (alpha = 0) from the same
SFT checkpoint with the same seeds, each checkpoint evaluated on held-out worlds; curves and a table.

    python -m mempo_verl.tiny.experiment --seeds 0 --steps 20 --out runs/tiny_world
    python -m mempo_verl.tiny.experiment --seeds 0,1,2 --steps 20 --out runs/tiny_world   # the 3-seed report
    python -m mempo_verl.tiny.experiment --alphas 1 --set mempo.credit.memory_gate=task_success --out runs/gated

Each RL run is the user CLI (``python -m mempo_verl.main``, recipe ``tiny_cpu``) with ``mempo.credit.alpha``, the
data order (``data.seed``) and the rollout seed set, plus any ``--set`` overrides, all from one SFT checkpoint:
``--sft-model`` or the recipe's own (``${mempo_tiny_world:sft_model}``: the shipped checkpoint, or trained once by
verl's SFT trainer). Evaluation is ``mempo-eval``'s runner with the ``memory`` context, twice per checkpoint, the two
side by side (a process and a core each): greedy over held-out worlds with k = 1-4 (k = 3, 4: more objectives than
trained), and sampled at temperature 1 (the policy RL optimises) over ``--sampled-worlds`` held-out worlds per trained
k (default ``data.SAMPLED_EVAL_ROWS``, where the binomial standard error of a 40 % R^T is 3 points per k; more worlds
narrow it as 1/sqrt(N)), with the worlds each run won and lost against SFT's evaluation. Writes ``<out>/results.md``
(the tables), ``<out>/curves.png`` and ``<out>/results.json``; a rerun reuses finished runs and evaluations.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from mempo_verl.main import quiet_imports
from mempo_verl.run_summary import read_metrics
from mempo_verl.tiny import data

ALPHAS = (1.0, 0.0)
"""MemPO and its ablation, GRPO in memory format."""
CURVES = (
    ("mempo/reward_T/mean", "R^T (train sessions)"),
    ("mempo/p_ans_mem/mean", "P[ans | mem]"),
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


SAMPLED_TEMPERATURE = 1.0
"""The sampled evaluation's temperature: the recipe's ``rollout.temperature``, the policy whose R^T RL raises."""


def evaluate(model: str, out_dir: Path, examples: int, sampled: bool = False) -> dict[int, dict[str, float]]:
    """Held-out EM / F1 / R^T / TT / PT per k of ``model`` (``memory`` context), resumable in ``out_dir``: greedy
    over ``examples`` worlds per k of ``data.EVAL_OBJECTIVES``, or ``sampled`` at ``SAMPLED_TEMPERATURE`` over
    ``examples`` worlds per trained k (one seed per world and turn, the same for every model)."""
    from mempo_verl.config import EnvConfig
    from mempo_verl.eval import BackendConfig, BudgetConfig, EvalConfig, SamplingConfig, run_eval

    objectives = data.TRAIN_OBJECTIVES if sampled else data.EVAL_OBJECTIVES
    config = EvalConfig(
        backend=BackendConfig(model=model, threads=1),  # one thread: two spin-wait when the other core is busy
        out_dir=str(out_dir),
        methods=("memory",),
        objectives=objectives,
        data=data.tiny_world_eval_sets(examples, objectives),
        max_examples=examples,
        sampling=SamplingConfig(temperature=SAMPLED_TEMPERATURE if sampled else 0.0),
        budget=BudgetConfig(max_turns=data.MAX_TURNS, prompt_length=512, turn_tokens=96),
        env=EnvConfig(name="synthetic", kwargs={"prompt": data.PROMPT}),
        overrides=tuple(f"{key}={json.dumps(value)}" for key, value in data.CONTEXT_OVERRIDES.items()),
        progress=False,
    )
    result = run_eval(config)
    return {
        row.objectives: {
            "em": row.em,
            "f1": row.f1,
            "all_em": row.all_em,
            "tt": row.tt,
            "pt": row.pt,
            "format_error_rate": row.format_error_rate,
            "turns": row.turns,
        }
        for row in result.rows
    }


def train(out_dir: Path, seed: int, alpha: float, steps: int, sft_model: str, overrides: list[str]) -> Path:
    """One RL run of the ``tiny_cpu`` recipe from ``sft_model`` with extra Hydra ``overrides`` (skipped when its final
    checkpoint exists); returns its folder."""
    run_dir = out_dir / f"seed{seed}_alpha{alpha:g}"
    if (run_dir / f"global_step_{steps}" / "actor" / "huggingface" / "config.json").exists():
        return run_dir
    command = [
        sys.executable,
        "-m",
        "mempo_verl.main",
        "--config-name",
        "tiny_cpu",
        f"actor_rollout_ref.model.path={sft_model}",
        f"mempo.credit.alpha={alpha}",
        f"data.seed={seed}",
        f"actor_rollout_ref.rollout.seed={seed}",
        f"trainer.total_training_steps={steps}",
        f"trainer.test_freq={steps}",
        f"trainer.save_freq={steps}",
        f"trainer.default_local_dir={run_dir}",
        f"trainer.experiment_name=tiny_world_seed{seed}_alpha{alpha:g}",
        *overrides,
    ]
    log(f"RL alpha={alpha:g} seed={seed}: {' '.join(command[1:])}")
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "console.log").open("w") as console:
        env = {**os.environ, "VERL_FILE_LOGGER_PATH": str(run_dir / "metrics.jsonl")}
        subprocess.run(command, check=True, stdout=console, stderr=subprocess.STDOUT, env=env)
    return run_dir


def paired_flips(run_dir: Path, base_dir: Path) -> dict[str, float]:
    """The worlds a run's sampled evaluation (``run_dir``) gets right (all answers) where the SFT checkpoint's
    (``base_dir``) got them wrong, ``up``, and the reverse, ``down``, over the worlds both finished; ``p`` is the exact
    two-sided sign test of up against down (McNemar's). Both evaluations draw every world's turns with the same seeds,
    so the pair shares the worlds' difficulty and the change is read where the two policies part."""
    from mempo_verl.eval.report import load_run

    def right(folder: Path) -> dict[str, bool]:
        return {r.key: r.metrics.all_em for r in load_run(folder) if r.status == "ok" and r.metrics is not None}

    run, base = right(run_dir), right(base_dir)
    shared = run.keys() & base.keys()
    up = sum(run[key] and not base[key] for key in shared)
    down = sum(base[key] and not run[key] for key in shared)
    tail = sum(math.comb(up + down, i) for i in range(min(up, down) + 1)) / 2 ** (up + down)
    return {"up": up, "down": down, "p": min(1.0, 2 * tail)}


def sampled_rt(ev: dict[str, dict[str, float]]) -> float:
    """Held-out R^T (% of worlds with all answers right) of a sampled evaluation, averaged over the trained k."""
    return sum(ev[str(k)]["all_em"] for k in data.TRAIN_OBJECTIVES) / len(data.TRAIN_OBJECTIVES)


def plot(results: dict[str, Any], path: Path) -> None:
    """Five panels: the two training curves per alpha (one line a seed), held-out greedy R^T and PT per k, and the
    sampled held-out R^T of every run against the SFT checkpoint's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(23, 4))
    colors = {1.0: "tab:red", 0.0: "tab:blue"}  # any other alpha: matplotlib's next colour
    for ax, (key, title) in zip(axes[:2], CURVES, strict=True):
        for run in results["runs"]:
            series = run["curves"].get(key, [])
            if series:
                steps, values = zip(*series, strict=True)
                ax.plot(
                    steps,
                    values,
                    color=colors.get(run["alpha"]),
                    alpha=0.8,
                    label=f"alpha={run['alpha']:g} seed {run['seed']}",
                )
        ax.set(title=title, xlabel="RL step")
        if ax.get_legend_handles_labels()[0]:  # alpha = 0 logs no P[ans | mem]
            ax.legend(fontsize=7)
    ks = list(data.EVAL_OBJECTIVES)
    width = 0.25
    for ax, metric, title in ((axes[2], "all_em", "held-out R^T, greedy (%)"), (axes[3], "pt", "PT, greedy")):
        ax.bar([k - width for k in ks], [results["sft"][str(k)][metric] for k in ks], width, color="grey", label="SFT")
        for offset, alpha in zip((0.0, width), results["alphas"], strict=False):
            runs = [r for r in results["runs"] if r["alpha"] == alpha]
            means = [sum(r["eval"][str(k)][metric] for r in runs) / len(runs) for k in ks]
            ax.bar([k + offset for k in ks], means, width, color=colors.get(alpha), label=f"alpha={alpha:g} (mean)")
        ax.set(title=title, xlabel="objectives k (trained on 1-2)", xticks=ks)
        ax.legend(fontsize=7)
    ax = axes[4]
    ax.axhline(sampled_rt(results["sft_sampled"]), color="grey", linestyle="--", label="SFT")
    for position, alpha in enumerate(results["alphas"]):
        values = [sampled_rt(r["eval_sampled"]) for r in results["runs"] if r["alpha"] == alpha]
        ax.scatter([position] * len(values), values, color=colors.get(alpha), label=f"alpha={alpha:g} (a seed each)")
        ax.plot([position - 0.2, position + 0.2], [sum(values) / len(values)] * 2, color=colors.get(alpha))
    ax.set(
        title=f"held-out R^T, sampled T={SAMPLED_TEMPERATURE:g} (%), k = 1-2, {results['sampled_worlds']} worlds each",
        xticks=range(len(results["alphas"])),
        xticklabels=[f"alpha={a:g}" for a in results["alphas"]],
        xlim=(-0.6, len(results["alphas"]) - 0.4),
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict[str, Any]) -> str:
    """Markdown: held-out greedy R^T (all answers right, %) and EM per k for SFT and each run, then the seed means;
    then the sampled held-out R^T per trained k and its change from SFT (with the worlds won and lost against SFT's
    evaluation, ``paired_flips``), and the seeds' mean and spread."""
    ks = data.EVAL_OBJECTIVES
    head = "| model | " + " | ".join(f"R^T k={k}" for k in ks) + " | " + " | ".join(f"EM k={k}" for k in ks) + " |"
    lines = ["Greedy:", "", head, "|" + "---|" * (1 + 2 * len(ks))]

    def row(name: str, ev: dict[str, dict[str, float]]) -> str:
        cells = [f"{ev[str(k)]['all_em']:.1f}" for k in ks] + [f"{ev[str(k)]['em']:.1f}" for k in ks]
        return f"| {name} | " + " | ".join(cells) + " |"

    lines.append(row("SFT", results["sft"]))
    for run in results["runs"]:
        lines.append(row(f"alpha={run['alpha']:g} seed {run['seed']}", run["eval"]))
    for alpha in results["alphas"]:
        runs = [r for r in results["runs"] if r["alpha"] == alpha]
        if len(runs) > 1:
            mean = {
                str(k): {m: sum(r["eval"][str(k)][m] for r in runs) / len(runs) for m in ("all_em", "em")} for k in ks
            }
            lines.append(row(f"alpha={alpha:g} mean of {len(runs)}", mean))
    trained = data.TRAIN_OBJECTIVES
    lines += [
        "",
        f"Sampled (temperature {SAMPLED_TEMPERATURE:g}, {results['sampled_worlds']} held-out worlds per k):",
        "",
        "| model | "
        + " | ".join(f"R^T k={k}" for k in trained)
        + " | R^T mean | change from SFT | worlds won / lost against SFT | sign test p |",
        "|" + "---|" * (5 + len(trained)),
    ]
    base = sampled_rt(results["sft_sampled"])

    def sampled_row(name: str, ev: dict[str, dict[str, float]], flips: dict[str, float] | None = None) -> str:
        cells = [f"{ev[str(k)]['all_em']:.1f}" for k in trained]
        change = "" if flips is None else f"{sampled_rt(ev) - base:+.1f}"
        p = "" if flips is None else (f"{flips['p']:.3f}" if flips["p"] >= 0.001 else f"{flips['p']:.0e}")
        paired = " | " if flips is None else f"{flips['up']} / {flips['down']} | {p}"
        return f"| {name} | " + " | ".join(cells) + f" | {sampled_rt(ev):.1f} | {change} | {paired} |"

    lines.append(sampled_row("SFT", results["sft_sampled"]))
    for run in results["runs"]:
        name = f"alpha={run['alpha']:g} seed {run['seed']}"
        lines.append(sampled_row(name, run["eval_sampled"], run["flips_sampled"]))
    for alpha in results["alphas"]:
        changes = [sampled_rt(r["eval_sampled"]) - base for r in results["runs"] if r["alpha"] == alpha]
        if len(changes) > 1:
            mean, spread = statistics.mean(changes), statistics.stdev(changes)
            empty = "| " * len(trained)
            change = f"{mean:+.1f} (seed std {spread:.1f})"
            lines.append(f"| alpha={alpha:g} mean of {len(changes)} {empty}| {base + mean:.1f} | {change} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--steps", type=int, default=20, help="RL steps per run")
    parser.add_argument("--alphas", default=",".join(f"{a:g}" for a in ALPHAS), help="comma-separated A^M weights")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for every RL run (repeatable), e.g. mempo.credit.memory_gate=task_success",
    )
    parser.add_argument("--eval-examples", type=int, default=data.EVAL_ROWS, help="held-out worlds per k, greedy")
    parser.add_argument(
        "--sampled-worlds",
        type=int,
        default=data.SAMPLED_EVAL_ROWS,
        help="held-out worlds per trained k, sampled (one world is 100/N points of R^T)",
    )
    parser.add_argument("--out", default="runs/tiny_world")
    parser.add_argument("--sft-model", help="a Hugging Face folder to start RL from (default: the recipe's SFT)")
    args = parser.parse_args(argv)
    quiet_imports()  # as in the evaluation workers, which import verl
    out = Path(args.out)
    start = time.perf_counter()
    log("SFT checkpoint (verl's SFT trainer; built once and cached)")
    sft_model = args.sft_model or data.tiny_world_sft_model()
    alphas = [float(a) for a in args.alphas.split(",")]
    worlds = args.sampled_worlds
    # the default's folders keep their names, so that earlier experiments resume
    sampled_dir = "eval_sampled" if worlds == data.SAMPLED_EVAL_ROWS else f"eval_sampled{worlds}"
    spawn = multiprocessing.get_context("spawn")  # why: forking a process that runs threads (torch's) is unsafe
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn, initializer=quiet_imports) as pool:

        def evaluate_both(model: str, name: str) -> tuple[dict, dict]:
            """A checkpoint's greedy and sampled evaluations side by side, a core each (each runs one torch
            thread): between RL runs both cores are free."""
            greedy = pool.submit(evaluate, model, out / f"eval_{name}", args.eval_examples)
            sampled = pool.submit(evaluate, model, out / f"{sampled_dir}_{name}", worlds, True)
            return greedy.result(), sampled.result()

        log(f"evaluating the SFT checkpoint on held-out worlds, greedy and sampled: {sft_model}")
        sft, sft_sampled = evaluate_both(sft_model, "sft")
        results: dict[str, Any] = {"sft_model": sft_model, "sampled_worlds": worlds, "sft": sft}
        results.update(sft_sampled=sft_sampled, alphas=alphas, overrides=args.overrides, steps=args.steps, runs=[])
        for seed in (int(s) for s in args.seeds.split(",")):
            for alpha in alphas:
                run_dir = train(out, seed, alpha, args.steps, sft_model, args.overrides)
                model = str(run_dir / f"global_step_{args.steps}" / "actor" / "huggingface")
                log(f"evaluating alpha={alpha:g} seed={seed}, greedy and sampled")
                metrics = read_metrics(run_dir / "metrics.jsonl")
                curves = {key: [(s, m[key]) for s, m in sorted(metrics.items()) if key in m] for key, _ in CURVES}
                name = f"seed{seed}_alpha{alpha:g}"
                greedy, sampled = evaluate_both(model, name)
                flips = paired_flips(out / f"{sampled_dir}_{name}", out / f"{sampled_dir}_sft")
                run = {"seed": seed, "alpha": alpha, "curves": curves, "eval": greedy, "eval_sampled": sampled}
                results["runs"].append({**run, "flips_sampled": flips})
    results = json.loads(json.dumps(results))  # int k keys -> str, as read back
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(table(results) + "\n")
    plot(results, out / "curves.png")
    log(f"done in {(time.perf_counter() - start) / 60:.1f} min:\n{table(results)}\nwrote {out}/results.md, curves.png")


if __name__ == "__main__":
    main()
