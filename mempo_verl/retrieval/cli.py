"""`mempo-retriever`: build an index, or serve one over Search-R1's `/retrieve` contract.

Usage:

    mempo-retriever build-index --corpus corpus.jsonl --out idx/ [--backend bm25|dense]
    mempo-retriever serve --index idx/ [--host 127.0.0.1 --port 8000 --topk-max 50 --max-queries 512]
    mempo-retriever serve                      # BM25 over the shipped sample corpus, built in memory (< 1 s)
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import get_args

from mempo_verl.retrieval.base import IndexBackend
from mempo_verl.retrieval.server import ServerLimits

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mempo-retriever", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build-index", help="index a JSONL corpus into a folder")
    build.add_argument("--corpus", required=True, help="JSONL corpus: {id, contents} (wiki-18) or {id, title, text}")
    build.add_argument("--out", required=True, help="index folder to write (created if missing)")
    build.add_argument("--backend", choices=get_args(IndexBackend), default="bm25", help="default: bm25")

    defaults = ServerLimits()
    serve = sub.add_parser("serve", help="serve an index on POST /retrieve and GET /health")
    serve.add_argument("--index", default=None, help="index folder from build-index (default: BM25 on sample corpus)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--topk", type=int, default=None, help=f"topk when a request omits it (default {defaults.default_topk})"
    )
    serve.add_argument("--topk-max", type=int, default=defaults.topk_max)
    serve.add_argument("--max-queries", type=int, default=defaults.max_queries)
    serve.add_argument("--max-query-chars", type=int, default=defaults.max_query_chars)
    serve.add_argument("--log-level", default="info")
    return parser


def run_build_index(args: argparse.Namespace) -> None:
    from mempo_verl.retrieval.factory import build_index

    start = time.monotonic()
    print(f"building a {args.backend} index over {args.corpus} ...", flush=True)
    index = build_index(args.backend, args.corpus, show_progress=True)
    index.save(args.out)
    print(f"wrote {args.backend} index of {len(index)} documents to {args.out} ({time.monotonic() - start:.1f}s)")


def run_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from mempo_verl.retrieval.factory import load_index, make_retriever
    from mempo_verl.retrieval.server import create_app

    # an unset --topk follows a lower --topk-max rather than failing ServerLimits' check
    default_topk = args.topk if args.topk is not None else min(ServerLimits.default_topk, args.topk_max)
    limits = ServerLimits(
        default_topk=default_topk,
        topk_max=args.topk_max,
        max_queries=args.max_queries,
        max_query_chars=args.max_query_chars,
    )
    if args.index is None:
        # why here: the entry point names the shipped corpus, so the retrieval library never imports `data`
        from mempo_verl.data import sample_corpus_path

        print("no --index given: serving BM25 over the shipped sample corpus", flush=True)
        index = make_retriever("bm25", corpus_path=sample_corpus_path())
    else:
        print(f"loading index {args.index} ...", flush=True)
        index = load_index(args.index)
    print(f"serving {index.backend} index of {len(index)} documents on http://{args.host}:{args.port}/retrieve")
    uvicorn.run(create_app(index, limits), host=args.host, port=args.port, log_level=args.log_level)


COMMANDS = {"build-index": run_build_index, "serve": run_serve}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mempo-retriever` (console script); returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    COMMANDS[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
