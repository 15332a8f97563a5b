"""The training agent loop, built outside a cluster: verl's composed config and verl's own instantiation.

Evaluation must not have a second implementation of the loop. ``make_agent_loop`` builds ``MemPOAgentLoop``
exactly as verl 0.9.1's ``AgentLoopWorker._run_agent_loop`` does (``hydra.utils.instantiate`` of the
``mempo_agent`` registry entry, ``DictConfigWrap`` around verl's composed ``ppo_trainer`` config), with the
backend's per-episode server in place of verl's server manager. ``agent_kwargs`` turns a parquet row into the
keyword arguments verl passes to ``run`` (``prompt`` becomes ``raw_prompt``, as ``RLHFDataset`` does).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mempo_verl.config import ContextPolicyName, MemPOConfig
from mempo_verl.context import POLICY_LAYOUTS
from mempo_verl.eval.config import EvalConfig

AGENT_NAME = "mempo_agent"
"""The registry name of ``MemPOAgentLoop`` (``@register("mempo_agent")``)."""


NO_SESSION_SCORING: dict[str, Any] = {"mempo": {"credit": {"scorer": "actor"}}}
"""Merged into every agent-loop config built outside a trainer (``trainer_config``, ``data.sft.agent_config``),
under the caller's overrides. The default scorer, ``rollout``, scores each session's memory credit through the server
at session end; nothing out here trains, so that credit is never read, and eval's backends (and the SFT oracle's
scripted turns) serve no prompt log-probs. ``actor`` leaves the scoring to a training step that never comes. An
override ``mempo.credit.scorer=rollout`` still wins (the rollout scorer's tests play sessions that way)."""


@functools.lru_cache(maxsize=1)
def ppo_trainer_config() -> DictConfig:
    """verl's ``ppo_trainer`` config composed from the installed package (once per process, ~1 s), struct off.

    Shared and cached: merge into it (``OmegaConf.merge`` returns a new node), never modify it in place.
    """
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        config = compose(config_name="ppo_trainer")
    OmegaConf.set_struct(config, False)  # the `mempo:` section is ours, not verl's schema
    return config


def trainer_config(config: EvalConfig, method: ContextPolicyName) -> DictConfig:
    """verl's composed config for ``method``: the eval budgets and sampling in ``rollout``, a ``mempo:`` section
    (session-end scoring off, ``NO_SESSION_SCORING``; ``config.overrides`` last).

    The policy's segment layout (``context.POLICY_LAYOUTS``) sets the budgets: ``per_turn`` (``memory`` /
    ``mem1``) bounds each turn's context by ``prompt_length`` and its generation by ``turn_tokens``; ``sequence``
    (``full``) appends every turn to one sequence, so its response budget is the whole trajectory's
    (``full_response_length``) and ``turn_tokens`` caps each turn through ``mempo.agent.max_turn_tokens``.
    """
    budget, sampling = config.budget, config.sampling
    # one growing sequence holds the whole trajectory's generations; a per-turn row holds one turn's
    response_length = budget.full_response_length if POLICY_LAYOUTS[method] == "sequence" else budget.turn_tokens
    rollout = {
        "prompt_length": budget.prompt_length,
        "response_length": response_length,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        # why off: log-probs cost a second forward pass on the local backend and no metric reads them
        "calculate_log_probs": False,
    }
    mempo = {
        "agent": {"max_turns": budget.max_turns, "max_turn_tokens": budget.turn_tokens},
        "context": {"policy": method},
        "env": {
            "name": config.env.name,
            "kwargs": dict(config.env.kwargs),
            "tool_timeout_s": config.env.tool_timeout_s,
        },
    }
    # merge returns a new config: the cached composition is never modified
    merged = OmegaConf.merge(
        ppo_trainer_config(),
        NO_SESSION_SCORING,
        {"actor_rollout_ref": {"model": {"path": config.backend.tokenizer_path}, "rollout": rollout}, "mempo": mempo},
        OmegaConf.from_dotlist(list(config.overrides)),
    )
    # validate now, naming the bad key, rather than in the first episode
    MemPOConfig.from_config(merged.get("mempo"))
    return merged


def sampling_params(config: DictConfig) -> dict[str, Any]:
    """The sampling parameters ``AgentLoopWorker.generate_sequences`` hands to ``run``."""
    rollout = config.actor_rollout_ref.rollout
    return dict(
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=rollout.top_k,
        repetition_penalty=1.0,
        logprobs=rollout.calculate_log_probs,
    )


def make_agent_loop(
    config: DictConfig,
    server: Any,
    tokenizer: Any,
    hf_model_type: str | None,
    agent_name: str = AGENT_NAME,
    tools: Sequence[Any] = (),
) -> Any:
    """``MemPOAgentLoop`` (or another registered agent loop) as verl's ``AgentLoopWorker._run_agent_loop``
    instantiates it.

    Args:
        config: ``trainer_config(...)``.
        server: anything with verl's ``generate(request_id, *, prompt_ids, sampling_params, **kw) -> TokenOutput``.
        tokenizer: the model's tokenizer.
        hf_model_type: the model's Hugging Face ``model_type`` (selects verl's Continuous Token builder).
        agent_name: the agent-loop registry name (benchmarks build verl's ``tool_agent`` the same way).
        tools: verl tools for loops that take them (``ToolAgentLoop``); ``MemPOAgentLoop`` uses its environment's.
    """
    import hydra
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry
    from verl.utils.dataset.rl_dataset import RLHFDataset

    import mempo_verl.agent_loop  # noqa: F401  (registers mempo_agent)

    return hydra.utils.instantiate(
        config=_agent_loop_registry[agent_name],
        trainer_config=DictConfigWrap(config=config),
        server_manager=server,
        tokenizer=tokenizer,
        processor=None,
        hf_model_type=hf_model_type,
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(config.data),
        tools=ToolListWrap(list(tools)),
    )


def agent_kwargs(row: Mapping[str, Any], uid: str) -> dict[str, Any]:
    """A verl parquet row -> the keyword arguments of ``MemPOAgentLoop.run`` (one session, ``session_id`` 0)."""
    kwargs = {k: v for k, v in row.items() if k not in ("prompt", "agent_name")}
    kwargs.update(raw_prompt=row.get("prompt"), uid=uid, session_id=0, global_steps=-1, tools_kwargs={})
    return kwargs
