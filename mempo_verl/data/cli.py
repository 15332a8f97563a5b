"""`mempo-data`: build verl parquet files from the shipped QA set or FlashRAG JSONL files.

Usage:

    mempo-data build --source sample --objectives 1 --out data/sample_k1
    mempo-data build --source nq.jsonl,hotpotqa.jsonl --objectives 2 --split-ratio 0.95 --out data/nq_hotpot_k2

    # SFT rows for the cold start (one row per turn, the exact context the agent loop shows; data/sft.py):
    mempo-data sft --source oracle --episodes 2000 --objectives 1,2 --hops 1 --out data/sft/train.parquet
    mempo-data sft --source traces --traces runs/teacher/traces.jsonl --out data/sft/teacher.parquet   # correct only
    mempo-data sft --source jsonl --jsonl my_rows.jsonl --out data/sft/mine.parquet

    # the offline `synthetic` task (envs/synthetic.py): k questions of h lookups each, one invented world a row
    mempo-data synthetic --objectives 3 --hops 2 --out data/synthetic_k3h2

    # k-objective evaluation sets, one data/eval/k{k}.parquet each (mempo-eval --data data/eval):
    mempo-data eval-sets --source sample --objectives 1,2,4,8,16 --out data/eval_sample
    mempo-data eval-sets --source hotpotqa.jsonl --source-for 2=nq.jsonl,hotpotqa.jsonl \
        --objectives 1,2,4,6,8,10,16 --split-ratio 0 --out data/eval           # the MemPO paper's sets
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import get_args

from mempo_verl.data.builder import BuildConfig, build_eval_sets, build_rows, load_pools, write_splits
from mempo_verl.envs.synthetic import NameStyle, PromptStyle

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mempo-data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = BuildConfig()
    build = sub.add_parser("build", help="write train.parquet / test.parquet")
    build.add_argument(
        "--source",
        default="sample",
        help="'sample' (shipped QA set) or FlashRAG JSONL files 'a.jsonl[,b.jsonl]': one file, or one per objective",
    )
    build.add_argument("--objectives", type=int, default=defaults.objectives, help="questions per prompt, k")
    build.add_argument("--split-ratio", type=float, default=defaults.split_ratio, help="fraction of questions to train")
    build.add_argument("--seed", type=int, default=defaults.seed)
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument("--max-train-rows", type=int, default=None)
    build.add_argument("--max-test-rows", type=int, default=None)
    build.add_argument("--data-source", default=None, help="data_source column (default: source names joined by +)")
    build.add_argument("--agent-name", default=defaults.agent_name)
    build.add_argument("--system-prompt", default=defaults.system_prompt, help="the task prompt (system message)")
    evals = sub.add_parser("eval-sets", help="write one k{k}.parquet test set per objective count")
    evals.add_argument("--source", default="sample", help="'sample' or FlashRAG JSONL file(s), for every k")
    evals.add_argument(
        "--source-for", action="append", default=[], metavar="K=SOURCE", help="another source for one k (repeatable)"
    )
    evals.add_argument("--objectives", default="1,2,4,8", help="comma-separated objective counts")
    evals.add_argument(
        "--split-ratio", type=float, default=defaults.split_ratio, help="0 for held-out files: every question"
    )
    evals.add_argument("--seed", type=int, default=defaults.seed)
    evals.add_argument("--max-rows", type=int, default=None, help="keep at most this many rows per k")
    evals.add_argument("--out", required=True, help="output folder")
    evals.add_argument("--system-prompt", default=defaults.system_prompt, help="the task prompt (system message)")
    sft = sub.add_parser("sft", help="write SFT parquet (one row per turn) for verl's SFT trainer")
    sft.add_argument("--source", choices=("oracle", "traces", "jsonl"), required=True)
    sft.add_argument("--out", required=True, help="output parquet file")
    sft.add_argument("--model", default=None, help="oracle: the policy's tokenizer/model folder (default: tiny world)")
    sft.add_argument("--episodes", type=int, default=1000, help="oracle: synthetic episodes per objective count")
    sft.add_argument("--objectives", default="1,2", help="oracle: comma-separated objective counts k")
    sft.add_argument("--hops", type=int, default=1, help="oracle: lookups per objective")
    sft.add_argument("--prompt", choices=get_args(PromptStyle), default="brief", help="oracle: synthetic task prompt")
    sft.add_argument("--max-turns", type=int, default=None, help="oracle: mempo.agent.max_turns (default: k*h+1 max)")
    sft.add_argument("--seed", type=int, default=0, help="oracle: world seed")
    sft.add_argument("--names", choices=get_args(NameStyle), default="syllables", help="oracle: entity names")
    sft.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="oracle: a recipe key of the contexts, e.g. "
        "mempo.context.turns_left_hint=false (repeatable; as the RL recipe sets it)",
    )
    sft.add_argument("--traces", default=None, help="traces: a mempo-eval traces.jsonl (or its folder)")
    sft.add_argument("--method", default="memory", help="traces: the method whose correct episodes to keep")
    sft.add_argument("--jsonl", default=None, help="jsonl: rows with 'messages' (and optional 'tools')")
    synthetic = sub.add_parser("synthetic", help="write train/test parquet of the offline synthetic lookup task")
    synthetic.add_argument("--out", required=True, help="output folder")
    synthetic.add_argument("--train-rows", type=int, default=1024)
    synthetic.add_argument("--test-rows", type=int, default=128)
    synthetic.add_argument("--objectives", type=int, default=1, help="questions per row, k")
    synthetic.add_argument("--hops", type=int, default=2, help="lookups per question, h")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--names", choices=get_args(NameStyle), default="syllables", help="entity names")
    synthetic.add_argument("--prompt", choices=get_args(PromptStyle), default="full", help="system message style")
    return parser


def dotlist(items: list[str]) -> dict[str, str]:
    """``["a.b=false", …]`` -> ``{"a.b": "false", …}``; the values stay text, parsed once by the config's own
    dotlist merge (``data.sft.agent_config``)."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"mempo-data sft --set {item!r}: expected KEY=VALUE")
        pairs[key.strip()] = value
    return pairs


def run_sft(args: argparse.Namespace) -> None:
    from mempo_verl.data.sft import jsonl_rows, synthetic_oracle_rows, trace_rows, write_sft

    if args.source == "oracle":
        objectives = tuple(int(k) for k in args.objectives.split(",") if k.strip())
        rows = synthetic_oracle_rows(
            args.model,
            objectives,
            args.hops,
            args.episodes,
            prompt=args.prompt,
            max_turns=args.max_turns,
            config_overrides=dotlist(args.set),
            seed=args.seed,
            names=args.names,
        )
        print(f"oracle: {len(rows)} rows from {len({r['episode'] for r in rows})} episodes")
    elif args.source == "traces":
        if not args.traces:
            raise SystemExit("mempo-data sft --source traces needs --traces runs/<name>/traces.jsonl")
        rows, counts = trace_rows(args.traces, args.method)
        print(
            f"traces: {counts['kept']} of {counts['episodes']} {args.method} episodes correct -> {counts['rows']} rows"
        )
    else:
        if not args.jsonl:
            raise SystemExit("mempo-data sft --source jsonl needs --jsonl rows.jsonl")
        rows = jsonl_rows(args.jsonl)
        print(f"jsonl: {len(rows)} rows")
    if not rows:
        raise SystemExit("mempo-data sft: no rows to write")
    print(f"-> {write_sft(rows, args.out)}")


def run_eval_sets(args: argparse.Namespace) -> None:
    import pandas as pd

    sources = {int(k): args.source for k in args.objectives.split(",") if k.strip()}
    for item in args.source_for:
        k, _, source = item.partition("=")
        if not source or not k.strip().isdigit():
            raise ValueError(f"--source-for {item!r}: write K=SOURCE, e.g. 2=nq.jsonl,hotpotqa.jsonl")
        sources[int(k)] = source
    config = BuildConfig(
        split_ratio=args.split_ratio, seed=args.seed, system_prompt=args.system_prompt, max_test_rows=args.max_rows
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for k, rows in build_eval_sets(sources, config).items():
        if not rows:
            print(f"k={k}: no rows ({sources[k]} has too few test questions); not written")
            continue
        pd.DataFrame(rows).to_parquet(out / f"k{k}.parquet", index=False)
        print(f"k={k}: {len(rows)} rows from {sources[k]} -> {out / f'k{k}.parquet'}")


def run_build(args: argparse.Namespace) -> None:
    config = BuildConfig(
        objectives=args.objectives,
        split_ratio=args.split_ratio,
        seed=args.seed,
        system_prompt=args.system_prompt,
        agent_name=args.agent_name,
        data_source=args.data_source,
        max_train_rows=args.max_train_rows,
        max_test_rows=args.max_test_rows,
    )
    pools = load_pools(args.source)
    print(f"read {' + '.join(f'{len(p)} ({p[0].source})' for p in pools)} questions", flush=True)
    splits = build_rows(pools, config)
    written = write_splits(splits, args.out)
    for split, rows in splits.items():
        where = written.get(split, "not written")
        print(f"{split}: {len(rows)} rows x {config.objectives} objective(s) -> {where}")


def run_synthetic(args: argparse.Namespace) -> None:
    from mempo_verl.envs.synthetic import make_synthetic_rows, min_turns

    splits = {
        split: make_synthetic_rows(rows, args.objectives, args.hops, args.seed, split, args.prompt, args.names)
        for split, rows in (("train", args.train_rows), ("test", args.test_rows))
    }
    for split, path in write_splits(splits, args.out).items():
        print(f"{split}: {len(splits[split])} rows -> {path} (min turns {min_turns(args.objectives, args.hops)})")


COMMANDS = {"build": run_build, "eval-sets": run_eval_sets, "sft": run_sft, "synthetic": run_synthetic}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mempo-data` (console script); returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    COMMANDS[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
