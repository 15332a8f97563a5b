"""Context growth (the paper's TT / PT claim): the same oracle episodes at k objectives under each context policy.

    python -m benchmarks.bench_context_growth                       # k = 1,2,4,8,16; tiny-world and Qwen2.5 BPE
    python -m benchmarks.bench_context_growth --episodes 4 --tokenizer tiny-world --png /tmp/growth.png

Each k gets ``--episodes`` fresh ``synthetic`` worlds (``--hops`` lookups per objective: k * hops + 1 turns); the
environment's oracle (``envs.synthetic.oracle_turns``) plays them through the real ``MemPOAgentLoop`` under
``memory``, ``mem1`` and ``full``, so the three policies see the same actions and observations. PT and TT are the
loop's own ``EpisodeSummary`` figures (DESIGN §6): PT = max over turns of prompt + completion tokens, TT = their
sum; each cell is the mean over the episodes. ``q`` is the tokens of the k questions alone, which every policy shows
every turn; ``obs`` the mean tokens of one lookup's observation (a document), what ``full`` accumulates per turn.

Targets (issue 13): ``memory`` PT(16) / PT(2) <= 1.5; ``memory`` TT / ``full`` TT <= 0.3 at k >= 8.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import (
    TokenizerName,
    header,
    loop_config,
    markdown_table,
    model_dir,
    play_scripted,
    synthetic_rows,
)

POLICIES = ("memory", "mem1", "full")
HERE = Path(__file__).resolve().parent


def measure(
    tokenizer_name: TokenizerName, objectives: list[int], episodes: int, hops: int
) -> dict[int, dict[str, tuple]]:
    """k -> policy -> (PT, TT) means over the episodes; k -> "q" -> (question tokens, turns, observation tokens
    per lookup)."""
    from transformers import AutoTokenizer

    from mempo_verl.context import render_questions
    from mempo_verl.envs.synthetic import min_turns, oracle_turns
    from mempo_verl.segments import Segment

    path = model_dir(tokenizer_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    results: dict[int, dict[str, tuple]] = {}
    for k in objectives:
        rows = synthetic_rows(episodes, k, hops)
        turns = min_turns(k, hops)
        scripts = [oracle_turns(row) for row in rows]
        results[k] = {}
        for policy in POLICIES:
            sessions = play_scripted(loop_config(path, policy, turns), tokenizer, rows, scripts)
            last = [Segment.from_extra_fields(s[-1].extra_fields) for s in sessions]
            summaries = [segment.episode for segment in last]
            results[k][policy] = (
                sum(e.peak_tokens for e in summaries) / episodes,
                sum(e.total_tokens for e in summaries) / episodes,
            )
        questions = [len(tokenizer.encode(render_questions(r["extra_info"]["questions"]))) for r in rows]
        # the last session's turns (full: all turns in its one segment) hold every observation
        observations = [len(tokenizer.encode(t.observation)) for s in last for t in s.turns if t.observation]
        results[k]["q"] = (sum(questions) / episodes, turns, sum(observations) / len(observations))
    return results


def table(results: dict[int, dict[str, tuple]]) -> str:
    columns = ["k", "turns", "q", "obs", *(f"PT {p}" for p in POLICIES), *(f"TT {p}" for p in POLICIES)]
    columns += ["PT memory / full", "TT memory / full", "TT mem1 / full"]
    rows = []
    for k, r in results.items():
        pt = [r[p][0] for p in POLICIES]
        tt = [r[p][1] for p in POLICIES]
        rows.append([k, r["q"][1], r["q"][0], r["q"][2], *pt, *tt, pt[0] / pt[2], tt[0] / tt[2], tt[1] / tt[2]])
    return markdown_table(columns, rows)


def verdicts(results: dict[int, dict[str, tuple]]) -> list[str]:
    """The issue's two targets, met or missed, with the figures."""
    lines = []
    if 2 in results and 16 in results:
        growth = results[16]["memory"][0] / results[2]["memory"][0]
        # what the policy cannot compress: the k questions are in every context
        q_growth = results[16]["q"][0] / results[2]["q"][0]
        rest = (results[16]["memory"][0] - results[16]["q"][0]) / (results[2]["memory"][0] - results[2]["q"][0])
        lines.append(
            f"- memory PT(16) / PT(2) = {growth:.2f} (target <= 1.5: {'met' if growth <= 1.5 else 'missed'}); "
            f"the questions alone grow {q_growth:.2f}x, PT without them {rest:.2f}x"
        )
    for k in (k for k in results if k >= 8):
        ratio = results[k]["memory"][1] / results[k]["full"][1]
        lines.append(
            f"- k = {k}: memory TT / full TT = {ratio:.3f} (target <= 0.3: {'met' if ratio <= 0.3 else 'missed'})"
        )
    return lines


def plot(all_results: dict[str, dict[int, dict[str, tuple]]], path: Path) -> None:
    """PT and TT vs objectives, one line per policy (solid tiny-world, dashed Qwen2.5 BPE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"tiny-world": "-", "qwen2.5": "--"}
    for tokenizer_name, results in all_results.items():
        ks = list(results)
        for index, (metric, label) in enumerate(
            ((0, "PT (peak tokens of a turn)"), (1, "TT (tokens of a trajectory)"))
        ):
            for policy, color in zip(POLICIES, ("C0", "C1", "C2"), strict=True):
                values = [results[k][policy][metric] for k in ks]
                axes[index].plot(ks, values, styles[tokenizer_name], color=color, marker="o",
                                 label=f"{policy} ({tokenizer_name})")  # fmt: skip
            axes[index].set(xlabel="objectives k", ylabel=label, xscale="log", yscale="log", xticks=ks)
            axes[index].set_xticklabels([str(k) for k in ks])
    axes[0].legend(fontsize=7)
    figure.suptitle("synthetic oracle episodes: context growth by policy")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default="1,2,4,8,16", help="comma-separated k")
    parser.add_argument("--episodes", type=int, default=8, help="worlds per k")
    parser.add_argument("--hops", type=int, default=1, help="lookups per objective (the tiny world: 1)")
    parser.add_argument("--tokenizer", action="append", choices=["tiny-world", "qwen2.5"], default=None)
    parser.add_argument("--png", type=Path, default=HERE / "context_growth.png")
    args = parser.parse_args(argv)
    objectives = [int(k) for k in args.objectives.split(",")]
    print(header("Context growth: synthetic oracle episodes under memory / mem1 / full"))
    all_results = {}
    for tokenizer_name in args.tokenizer or ["tiny-world", "qwen2.5"]:
        all_results[tokenizer_name] = results = measure(tokenizer_name, objectives, args.episodes, args.hops)
        print(f"tokenizer {tokenizer_name}, {args.hops} lookup(s) per objective, {args.episodes} episodes per k:\n")
        print(table(results))
        print()
        print("\n".join(verdicts(results)))
        print()
    plot(all_results, args.png)
    print(f"plot: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
