"""Agent-loop host overhead: time per turn outside generation and the tool, MemPOAgentLoop against verl's ToolAgentLoop.

    python -m benchmarks.bench_agent_loop_overhead                     # 20 timed 16-turn episodes per loop
    python -m benchmarks.bench_agent_loop_overhead --episodes 5 --tokenizer qwen2.5

Both loops run in this process, built by ``eval.loop.make_agent_loop`` as verl's ``AgentLoopWorker`` builds them,
on the same 16-turn ``synthetic`` episodes (15 objectives of one lookup, then the answer): a scripted server replays
the oracle's turns (``oracle_turns``; tokenizing the script is inside ``generate``, so it is excluded), and both
loops' ``lookup`` tool is the same ``SyntheticEnv.step`` (MemPO through a registered environment, verl through an
async ``FunctionTool``). Clocks around every ``generate`` and every tool call split the session's wall time; the
rest is the loop's host time: parse, context build, tokenisation, segment assembly.

- turn: from the end of ``generate`` t to the start of ``generate`` t+1, minus the tool call in between (parse and
  act of turn t, context of turn t+1); median and p99 over all turns of all episodes, and the median per index;
- start: ``run`` called -> first ``generate`` (the first context); end: last ``generate`` -> ``run`` returns (the
  last parse and every segment's assembly);
- per turn, all in: (wall - generate - tool) / turns.

Two untimed episodes per loop warm up imports and caches first. Target (issue 13): <= 1 ms median per turn, flat in
the turn index under ``memory``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import header, loop_config, markdown_table, median, model_dir, percentile, synthetic_rows
from mempo_verl.data.sft import ScriptedTurns
from mempo_verl.envs import Observation, register_env
from mempo_verl.envs.synthetic import SyntheticEnv, oracle_turns
from mempo_verl.protocol import ToolCall

TURNS = 16
TIMED_ENV = "bench_timed_synthetic"


@dataclass
class Clock:
    """(start, end) perf_counter pairs of one session's generate and tool calls."""

    generate: list[tuple[float, float]] = field(default_factory=list)
    tool: list[tuple[float, float]] = field(default_factory=list)

    def reset(self) -> None:
        self.generate.clear()
        self.tool.clear()


CLOCK = Clock()
"""The running session's clock (sessions run one at a time)."""


@register_env(TIMED_ENV)
class TimedSyntheticEnv(SyntheticEnv):
    """``synthetic`` whose every step is clocked (so tool time is subtracted from the host time)."""

    async def step(self, tool_call: ToolCall, sample: Mapping[str, Any]) -> Observation:
        start = time.perf_counter()
        observation = await super().step(tool_call, sample)
        CLOCK.tool.append((start, time.perf_counter()))
        return observation


class TimedScript(ScriptedTurns):
    """``ScriptedTurns`` with every ``generate`` clocked."""

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **kwargs: Any):
        start = time.perf_counter()
        output = await super().generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params)
        CLOCK.generate.append((start, time.perf_counter()))
        return output


def verl_lookup_tool(env: SyntheticEnv, row: Mapping[str, Any]) -> Any:
    """verl's async ``FunctionTool`` for ``lookup`` over ``row``'s world, clocked like ``TimedSyntheticEnv``."""
    from verl.tools.function_tool import FunctionTool
    from verl.tools.schemas import OpenAIFunctionToolSchema

    async def lookup(key: str) -> str:
        start = time.perf_counter()
        observation = await SyntheticEnv.step(env, ToolCall("lookup", {"key": key}), row)
        CLOCK.tool.append((start, time.perf_counter()))
        return observation.text

    schema = OpenAIFunctionToolSchema.model_validate(env.tool_schemas()[0])
    return FunctionTool(name="lookup", fn=lookup, tool_schema=schema, is_async=True)


def split(wall: tuple[float, float], clock: Clock) -> dict[str, Any]:
    """One session's host times: per-turn gaps (tool subtracted), start, end, and the all-in per-turn mean."""
    gens, tools = clock.generate, clock.tool
    gaps = []
    for (_, end), (start, _) in zip(gens, gens[1:], strict=False):
        tool = sum(b - a for a, b in tools if end <= a and b <= start)
        gaps.append(start - end - tool)
    busy = sum(b - a for a, b in gens) + sum(b - a for a, b in tools)
    return {
        "turns": gaps,
        "start": gens[0][0] - wall[0],
        "end": wall[1] - gens[-1][1],
        "all_in": (wall[1] - wall[0] - busy) / len(gens),
    }


async def session(loop_name: str, config: Any, tokenizer: Any, row: dict, index: int) -> dict[str, Any]:
    """One clocked session of ``loop_name`` ("memory", "mem1", "full": MemPOAgentLoop; "tool_agent": verl's)."""
    from mempo_verl.eval.loop import agent_kwargs, make_agent_loop, sampling_params

    CLOCK.reset()
    server = TimedScript(tokenizer, oracle_turns(row))
    if loop_name == "tool_agent":
        tool = verl_lookup_tool(SyntheticEnv(prompt="brief"), row)
        loop = make_agent_loop(config, server, tokenizer, "qwen2", agent_name="tool_agent", tools=[tool])
    else:
        loop = make_agent_loop(config, server, tokenizer, "qwen2")
    kwargs = agent_kwargs(row, uid=f"bench-{index}")
    start = time.perf_counter()
    await loop.run(sampling_params(config), **kwargs)
    end = time.perf_counter()
    if len(CLOCK.generate) != TURNS:
        raise RuntimeError(f"{loop_name}: the episode took {len(CLOCK.generate)} turns, {TURNS} scripted")
    return split((start, end), CLOCK)


def measure(tokenizer_name: str, episodes: int) -> dict[str, list[dict[str, Any]]]:
    """loop -> per timed session, ``split``'s figures."""
    import verl.experimental.agent_loop.tool_agent_loop  # noqa: F401  (registers tool_agent)
    from transformers import AutoTokenizer

    path = model_dir(tokenizer_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    env = {"mempo.env.name": TIMED_ENV, "mempo.env.kwargs.prompt": "brief"}
    rows = synthetic_rows(episodes + 2, TURNS - 1)
    results = {}
    for loop_name in ("memory", "mem1", "full", "tool_agent"):
        config = loop_config(path, "full" if loop_name == "tool_agent" else loop_name, TURNS, env=env)
        # verl's loop: the same budgets as MemPO's full; it parses hermes <tool_call> JSON, as our turns write it
        config.actor_rollout_ref.rollout.multi_turn.format = "hermes"
        timed = [asyncio.run(session(loop_name, config, tokenizer, row, i)) for i, row in enumerate(rows)]
        results[loop_name] = timed[2:]  # the first two warm imports and caches
    return results


def tables(results: dict[str, list[dict[str, Any]]]) -> str:
    ms = 1e3
    base = results["tool_agent"]
    base_median = median([g for s in base for g in s["turns"]])
    base_all_in = median([s["all_in"] for s in base])
    rows = []
    for name, sessions in results.items():
        gaps = [g for s in sessions for g in s["turns"]]
        all_in = median([s["all_in"] for s in sessions])
        rows.append([
            name, median(gaps) * ms, percentile(gaps, 99) * ms, median([s["start"] for s in sessions]) * ms,
            median([s["end"] for s in sessions]) * ms, all_in * ms, median(gaps) / base_median, all_in / base_all_in,
        ])  # fmt: skip
    summary = markdown_table(
        ["loop", "turn median (ms)", "turn p99 (ms)", "start (ms)", "end (ms)", "per turn, all in (ms)",
         "turn median / tool_agent", "all in / tool_agent"],
        rows,
    )  # fmt: skip
    per_index = [
        [name, *(median([s["turns"][t] for s in sessions]) * ms for t in range(TURNS - 1))]
        for name, sessions in results.items()
    ]
    by_turn = markdown_table(["loop", *(f"{t}->{t + 1}" for t in range(TURNS - 1))], per_index)
    return f"{summary}\n\nmedian host time (ms) between generate t and t+1, by turn index:\n\n{by_turn}"


PROFILED = {
    "context: policy + verl build_initial_tokens": ("agent_loop.py", "_build_context"),
    "  verl ContinuousTokenBuilder.build_initial_tokens": ("continuous_token.py", "build_initial_tokens"),
    "parse: undecodable_ids (len(tokenizer))": ("segments.py", "undecodable_ids"),
    "parse: decode + parse_turn": ("agent_loop.py", "_parse"),
    "act: env step + commit (memory budget check)": ("agent_loop.py", "_act"),
    "end: outputs (segments)": ("agent_loop.py", "_outputs"),
    "  memory_token_span (prefix decodes)": ("segments.py", "memory_token_span"),
    "  Segment.to_extra_fields (dataclasses.asdict)": ("segments.py", "to_extra_fields"),
}
"""Label -> (file name, function) of the host-time parts ``--profile`` reports (cumulative: a part holds its
indented sub-parts)."""


def profile(tokenizer_name: str, episodes: int) -> str:
    """Where ``memory``'s host time goes: cProfile cumulative ms per turn of ``PROFILED`` (profiling inflates all)."""
    import cProfile
    import pstats

    from transformers import AutoTokenizer

    path = model_dir(tokenizer_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = loop_config(path, "memory", TURNS, env={"mempo.env.name": TIMED_ENV, "mempo.env.kwargs.prompt": "brief"})
    rows = synthetic_rows(episodes + 1, TURNS - 1)
    asyncio.run(session("memory", config, tokenizer, rows[0], 0))  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    for index, row in enumerate(rows[1:]):
        asyncio.run(session("memory", config, tokenizer, row, index))
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    turns = episodes * TURNS
    run_ms = sum(v[3] for k, v in stats.items() if k[0].endswith("agent_loop.py") and k[2] == "run") * 1e3 / turns
    rows_out = [["MemPOAgentLoop.run (generate and tool included)", run_ms, 1.0]]
    for label, (file, function) in PROFILED.items():
        ms = sum(v[3] for k, v in stats.items() if k[0].endswith(file) and k[2] == function) * 1e3 / turns
        rows_out.append([label, ms, ms / run_ms])
    return markdown_table(["part (memory, under cProfile)", "ms per turn", "share of run"], rows_out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20, help="timed 16-turn episodes per loop")
    parser.add_argument("--tokenizer", choices=["tiny-world", "qwen2.5"], default="tiny-world")
    parser.add_argument("--profile", type=int, default=5, help="profiled memory episodes for the breakdown; 0: none")
    args = parser.parse_args(argv)
    print(header("Agent-loop host overhead per turn (generation and tool time excluded)"))
    results = measure(args.tokenizer, args.episodes)
    print(f"tokenizer {args.tokenizer}, {args.episodes} timed episodes of {TURNS} turns per loop:\n")
    print(tables(results))
    if args.profile:
        print(f"\nwhere memory's host time goes ({args.profile} episodes under cProfile, which inflates every part):\n")
        print(profile(args.tokenizer, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
