"""`mempo-eval`: evaluate a model under the MemPO, full-history and MEM1 contexts over 1..16 objectives.

Usage:

    # the shipped QA set, three methods side by side, the offline tiny model (examples/eval/README.md runs the
    # tiny world's SFT model, tiny:sft, on its own held-out worlds)
    mempo-eval --model tiny:random --objectives 1,2,4,8 --max-examples 4 --max-turns 4 --turn-tokens 96 \\
        --out outputs/tiny
    # any OpenAI-compatible server (vllm serve / SGLang) on the paper's test sets
    mempo-eval --url http://127.0.0.1:8000 --model Qwen/Qwen2.5-7B-Instruct --data data/eval \\
        --objectives 2,4,6,8,10 --env-kwargs '{"backend": "http", "url": "http://127.0.0.1:8001/retrieve"}' \\
        --out outputs/qwen7b
    mempo-eval --compare outputs/base outputs/mempo          # B - A per method and k, on the examples both finished
    mempo-eval --report outputs/qwen7b --objective-score sum   # rewrite the reports (MEM1's summed EM / F1)

Re-running with the same --out resumes: finished examples are skipped, failed ones retried. The exit status is 0
when every example finished, 2 when some failed (they are listed in summary.md and traces.jsonl).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mempo_verl.config import CONTEXT_POLICIES, EnvConfig
from mempo_verl.eval.config import (
    BACKEND_KINDS,
    OBJECTIVE_SCORES,
    BackendConfig,
    BudgetConfig,
    EvalConfig,
    SamplingConfig,
)

logger = logging.getLogger(__name__)

TINY_PREFIX = "tiny:"
"""``--model tiny:random`` / ``tiny:sft``: the offline tiny model (``mempo_verl.tiny.models.tiny_model_path``)."""


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"mempo-eval: --env-kwargs is not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"mempo-eval: --env-kwargs must be a JSON object, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mempo-eval", description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    b, s, g = BackendConfig(model="m"), SamplingConfig(), BudgetConfig()
    modes = parser.add_argument_group("other modes")
    modes.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="compare two output folders")
    modes.add_argument("--report", metavar="RUN", help="rewrite summary.md/.csv and plots from RUN's traces")
    model = parser.add_argument_group("model and backend")
    model.add_argument("--model", help="model folder or name; tiny:random / tiny:sft for the offline tiny model")
    model.add_argument("--backend", choices=BACKEND_KINDS, help="default: openai with --url, else local")
    model.add_argument("--url", help="OpenAI-compatible server base URL (backend openai)")
    model.add_argument("--tokenizer", help="tokenizer folder or name (default: --model)")
    model.add_argument("--device", default=b.device, help="local backend: torch device")
    model.add_argument("--threads", type=int, help="local backend: torch CPU threads (default: torch's)")
    model.add_argument("--dtype", default=b.dtype, help="local backend: float32, bfloat16, float16 or auto")
    model.add_argument("--concurrency", type=int, default=b.concurrency, help="episodes (requests) in flight")
    model.add_argument("--timeout", type=float, default=b.timeout_s, help="seconds per request")
    model.add_argument("--retries", type=int, default=b.max_retries, help="retries of a failed request")
    model.add_argument("--backoff", type=float, default=b.backoff_s, help="first wait between retries, doubled")
    run = parser.add_argument_group("what to evaluate")
    run.add_argument("--methods", default=",".join(CONTEXT_POLICIES), help=f"subset of {','.join(CONTEXT_POLICIES)}")
    run.add_argument("--objectives", default="1,2,4,8", help="objective counts k")
    run.add_argument("--data", default="sample", help="'sample', a folder of k*.parquet, or files a,b")
    run.add_argument("--max-examples", type=int, help="at most this many rows per dataset and k")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--temperature", type=float, default=s.temperature, help="0 = greedy")
    run.add_argument("--top-p", type=float, default=s.top_p)
    run.add_argument("--top-k", type=int, default=s.top_k)
    run.add_argument("--max-turns", type=int, default=g.max_turns)
    run.add_argument("--prompt-length", type=int, default=g.prompt_length, help="tokens of one turn's context")
    run.add_argument("--turn-tokens", type=int, default=g.turn_tokens, help="tokens one turn may generate")
    run.add_argument("--full-response-length", type=int, default=g.full_response_length, help="full: trajectory")
    run.add_argument("--env", default=EnvConfig.name, help="environment name")
    run.add_argument("--env-kwargs", default="{}", help="environment options as JSON")
    run.add_argument("--tool-timeout", type=float, default=EnvConfig.tool_timeout_s)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", help="output folder (resumed when it exists); with --compare: the report file")
    out.add_argument("--objective-score", choices=OBJECTIVE_SCORES, default="mean", help="mean x100 or MEM1 sum")
    out.add_argument("--no-progress", action="store_true")
    return parser


def resolve_model(name: str) -> str:
    """``tiny:random`` / ``tiny:sft`` -> the offline tiny model's folder (built on first use); else ``name``."""
    if not name.startswith(TINY_PREFIX):
        return name
    from mempo_verl.tiny.models import tiny_model_path

    return tiny_model_path(name[len(TINY_PREFIX) :])


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The ``EvalConfig`` of a run's command line (validated by the dataclasses)."""
    if not args.model or not args.out:
        raise SystemExit("mempo-eval: --model and --out are required to run an evaluation")
    backend = BackendConfig(
        kind=args.backend or ("openai" if args.url else "local"),
        model=resolve_model(args.model),
        url=args.url,
        tokenizer=resolve_model(args.tokenizer) if args.tokenizer else None,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        max_retries=args.retries,
        backoff_s=args.backoff,
    )
    return EvalConfig(
        backend=backend,
        out_dir=args.out,
        methods=_names(args.methods),
        objectives=_ints(args.objectives),
        data=args.data,
        max_examples=args.max_examples,
        seed=args.seed,
        sampling=SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k),
        budget=BudgetConfig(
            max_turns=args.max_turns,
            prompt_length=args.prompt_length,
            turn_tokens=args.turn_tokens,
            full_response_length=args.full_response_length,
        ),
        env=EnvConfig(name=args.env, kwargs=_json_object(args.env_kwargs), tool_timeout_s=args.tool_timeout),
        overrides=tuple(args.set),
        objective_score=args.objective_score,
        progress=not args.no_progress,
    )


def run_compare(args: argparse.Namespace) -> int:
    from mempo_verl.eval.report import compare

    text = compare(*args.compare, mode=args.objective_score)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from mempo_verl.eval.report import load_run, write_reports

    records = load_run(args.report)
    files = write_reports(records, args.objective_score, Path(args.report))
    print((Path(args.report) / "summary.md").read_text())
    print("\n".join(f"wrote {path}" for path in files.values()))
    return 0


def run_evaluation(args: argparse.Namespace) -> int:
    from mempo_verl.eval.runner import run_eval

    result = run_eval(config_from_args(args))
    print(result.files["summary.md"].read_text())
    print("\n".join(f"wrote {path}" for path in result.files.values()))
    print(
        f"{len(result.records)} episodes ({result.ran} run now, {len(result.records) - result.ran} resumed), "
        f"{result.errors} failed, {result.seconds:.1f} s"
    )
    return 2 if result.errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mempo-eval` (console script); returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.compare:
        return run_compare(args)
    if args.report:
        return run_report(args)
    return run_evaluation(args)


if __name__ == "__main__":
    sys.exit(main())
