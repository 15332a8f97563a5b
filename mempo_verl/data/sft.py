"""SFT data for the cold start (the paper's stage 1): one row per turn, holding exactly the context the policy sees.

MemPO first fine-tunes the policy on correct ``<mem>``-format trajectories (GPT-4.1 traces, wrong ones dropped,
~10K), then runs RL. The rows here are verl ``MultiTurnSFTDataset`` rows, trained by verl's own SFT trainer
(``python -m mempo_verl.sft``)::

    {"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", "content": <turn>}],
     "tools": [<the environment's tool schemas>], "source": "oracle" | "traces" | "jsonl", "episode": "...",
     "turn": t}

verl tokenizes the messages with the model's chat template and puts the loss on the assistant turn only (its text
and the closing ``<|im_end|>``), so the prompt is the context the agent loop built for turn t: the messages come
from the agent loop's own ``ContextPolicy`` over the session's recorded turns (``turn_messages``), and a test checks
that verl's tokenization of every row equals the ids the loop sent and generated.

Sources (``mempo-data sft``):
- ``oracle``: the ``synthetic`` environment's optimal agent (``envs.synthetic.oracle_turns``), played through the
  real ``MemPOAgentLoop``; every trajectory is correct.
- ``traces``: ``mempo-eval`` traces of any teacher model (``--url`` a served model), correct trajectories only
  (R^T = 1: every answer right, format valid: the paper's filter).
- ``jsonl``: user rows already in this shape (``messages`` ending with the assistant turn, optional ``tools``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mempo_verl.config import MemPOConfig
from mempo_verl.context import ContextPolicy, EpisodeContext
from mempo_verl.protocol import Message
from mempo_verl.segments import Segment

logger = logging.getLogger(__name__)


def turn_messages(segments: Sequence[Segment], mempo: MemPOConfig) -> list[list[Message]]:
    """The chat messages each turn of one session was generated from (``per_turn`` layout: a segment a turn).

    Replays the session's recorded turns (``turns.TurnRecord``, the records ``MemPOAgentLoop`` committed and its
    context policy rendered from) through the same ``ContextPolicy``, for turn t's messages.
    """
    policy = ContextPolicy(mempo.context, mempo.tags)
    if policy.layout != "per_turn":
        raise ValueError(f"SFT rows are built per turn; mempo.context.policy={policy.name} keeps one growing sequence")
    first = segments[0]
    episode = EpisodeContext(first.task_prompt, first.question_text, mempo.agent.max_turns)
    turns = [turn for segment in segments for turn in segment.turns]
    return [policy.messages(episode, turns[:t]) for t in range(len(turns))]


def sft_row(context: Sequence[Message], turn_text: str, tools: Sequence[Mapping[str, Any]], **meta: Any) -> dict:
    """One SFT row: ``context`` + the assistant turn, the tool schemas, and provenance columns."""
    return {
        "messages": [dict(m) for m in context] + [{"role": "assistant", "content": turn_text}],
        "tools": [dict(t) for t in tools],
        **meta,
    }


class ScriptedTurns:
    """verl's server-manager ``generate`` that returns the next scripted turn (tokenized, eos appended)."""

    def __init__(self, tokenizer: Any, turns: Iterable[str]) -> None:
        self.tokenizer = tokenizer
        self.turns = list(turns)

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **kwargs: Any):
        from verl.workers.rollout.replica import TokenOutput

        if not self.turns:
            raise RuntimeError("the script has no turn left: the episode asked for more turns than scripted")
        ids = self.tokenizer.encode(self.turns.pop(0), add_special_tokens=False) + [int(self.tokenizer.eos_token_id)]
        return TokenOutput(token_ids=ids, stop_reason="completed", num_preempted=0, extra_fields={})


def agent_config(model_path: str, overrides: Mapping[str, Any]) -> Any:
    """verl's composed ``ppo_trainer`` config with ``model_path`` and ``overrides`` (dotted keys) merged in, session-end
    scoring off unless ``overrides`` set ``mempo.credit.scorer`` (``eval.loop.NO_SESSION_SCORING``)."""
    from omegaconf import OmegaConf

    from mempo_verl.eval.loop import NO_SESSION_SCORING, ppo_trainer_config

    dotlist = [f"actor_rollout_ref.model.path={model_path}", *(f"{k}={v}" for k, v in overrides.items())]
    return OmegaConf.merge(ppo_trainer_config(), NO_SESSION_SCORING, OmegaConf.from_dotlist(dotlist))


def oracle_rows(env_rows: Sequence[Mapping[str, Any]], config: Any, tokenizer: Any) -> list[dict]:
    """SFT rows of the oracle's episodes on ``env_rows`` (``synthetic`` rows), played through ``MemPOAgentLoop``.

    Args:
        env_rows: verl parquet rows of the ``synthetic`` environment.
        config: ``agent_config(...)``: the agent loop's config (its ``mempo:`` section picks the context policy).
        tokenizer: the policy's tokenizer.
    """
    from mempo_verl.envs.synthetic import oracle_turns
    from mempo_verl.eval.loop import agent_kwargs, make_agent_loop, sampling_params

    mempo = MemPOConfig.from_config(config.get("mempo"))
    params = sampling_params(config)

    async def one(index: int, row: Mapping[str, Any]) -> list[dict]:
        loop = make_agent_loop(config, ScriptedTurns(tokenizer, oracle_turns(row)), tokenizer, "qwen2")
        outputs = await loop.run(params, **agent_kwargs(row, uid=f"oracle-{index}"))
        segments = [Segment.from_extra_fields(o.extra_fields) for o in outputs]
        if not segments[-1].format_valid or segments[-1].termination != "answer":
            raise RuntimeError(f"row {index}: the oracle episode ended with {segments[-1].termination!r}")
        tools = loop.tool_schemas
        turns = [t for s in segments for t in s.turns]
        contexts = turn_messages(segments, mempo)
        return [
            sft_row(ctx, turn.text, tools, source="oracle", episode=f"oracle-{index}", turn=turn.turn_index)
            for ctx, turn in zip(contexts, turns, strict=True)
        ]

    async def run_all() -> list[dict]:
        rows = []
        for index, row in enumerate(env_rows):
            rows += await one(index, row)
        return rows

    return asyncio.run(run_all())


def synthetic_oracle_rows(
    model_path: str | None,
    objectives: Sequence[int],
    hops: int,
    episodes: int,
    *,
    prompt: str = "brief",
    max_turns: int | None = None,
    seed: int = 0,
    names: str = "syllables",
    config_overrides: Mapping[str, Any] | None = None,
) -> list[dict]:
    """SFT rows of the ``synthetic`` oracle: ``episodes`` fresh worlds per k in ``objectives``, ``hops`` each
    (``names``: the worlds' ``NameStyle``; one seed per k, so worlds of different k share no draws).

    Args:
        model_path: the policy's model folder (its tokenizer and chat template); None: the tiny world's.
        max_turns: ``mempo.agent.max_turns`` of the contexts (the turns-left hint); None: the most the oracle needs.
        config_overrides: more dotlist keys of the recipe the rows are for (e.g. ``mempo.context.turns_left_hint``),
            so that the contexts are the ones its agent loop builds.
    """
    from transformers import AutoTokenizer

    from mempo_verl.envs.synthetic import make_synthetic_rows, min_turns

    if not objectives or min(objectives) < 1 or episodes < 1 or hops < 1:
        raise ValueError(f"objectives, episodes and hops must be positive, got {objectives}, {episodes}, {hops}")
    needed = max(min_turns(k, hops) for k in objectives)
    if max_turns is not None and max_turns < needed:
        raise ValueError(f"max_turns={max_turns} is below the {needed} turns the oracle needs")
    if model_path is None:
        from mempo_verl.tiny import tiny_world_model_dir

        model_path = str(tiny_world_model_dir())
    overrides = {
        "mempo.env.name": "synthetic",
        "mempo.env.kwargs.prompt": prompt,
        "mempo.agent.max_turns": max_turns or needed,
        "actor_rollout_ref.rollout.prompt_length": 8192,
        "actor_rollout_ref.rollout.response_length": 1024,
        **(config_overrides or {}),
    }
    env_rows = [
        row
        for k in objectives
        for row in make_synthetic_rows(episodes, k, hops, 100 * seed + k, split="sft", prompt=prompt, names=names)
    ]
    return oracle_rows(env_rows, agent_config(model_path, overrides), AutoTokenizer.from_pretrained(model_path))


def trace_rows(traces_path: str | Path, method: str = "memory") -> tuple[list[dict], dict[str, int]]:
    """SFT rows from ``mempo-eval`` traces (``traces.jsonl`` or its run folder): the turns of correct trajectories
    (R^T = 1) of ``method`` only.

    Returns:
        ``(rows, counts)`` with counts of ``episodes`` read, ``kept`` (correct) and ``rows``.
    """
    from mempo_verl.eval.records import RecordStore
    from mempo_verl.eval.runner import TRACES_FILE

    path = Path(traces_path)
    records = RecordStore(path / TRACES_FILE if path.is_dir() else path).load()
    rows: list[dict] = []
    counts = {"episodes": 0, "kept": 0, "rows": 0}
    for record in records.values():
        if record.method != method or record.status != "ok":
            continue
        counts["episodes"] += 1
        if record.metrics is None or not (record.metrics.all_em and record.metrics.format_valid):
            continue  # the paper's filter: correct trajectories only (R^T = 1)
        counts["kept"] += 1
        for turn in record.turns:
            rows.append(
                sft_row(
                    turn["messages"],
                    turn["output"],
                    record.tools,
                    source="traces",
                    episode=record.key,
                    turn=turn["turn"],
                )
            )
    counts["rows"] = len(rows)
    return rows, counts


def jsonl_rows(path: str | Path) -> list[dict]:
    """User SFT rows (JSON lines with ``messages`` ending in an assistant turn, optional ``tools``), checked."""
    rows = []
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{where}: not JSON ({exc})") from None
        messages = data.get("messages") if isinstance(data, dict) else None
        if (
            not isinstance(messages, list)
            or not messages
            or not all(
                isinstance(m, dict)
                and isinstance(m.get("content"), str)
                and m.get("role") in ("system", "user", "assistant")
                for m in messages
            )
        ):
            raise ValueError(f"{where}: 'messages' must be a non-empty list of {{role, content}} chat messages")
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"{where}: the last message must be the assistant turn to train on")
        tools = data.get("tools") or []
        rows.append(
            {"messages": messages, "tools": list(tools), "source": "jsonl", "episode": where, "turn": len(messages) - 1}
        )
    return rows


def write_sft(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """``rows`` as one parquet file (verl ``MultiTurnSFTDataset`` reads it)."""
    import pandas as pd

    if not rows:
        raise ValueError(f"no SFT rows to write to {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(list(rows)).to_parquet(path, index=False)
    return path
