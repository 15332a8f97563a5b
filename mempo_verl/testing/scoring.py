"""Test helpers for memory-credit scoring: an independent P[ans | ctx], a rollout server with a prefix cache, and a
server manager that sends scoring requests to one backend and turns to another.

``CachingServer`` keeps the contract of verl 0.9.1's vLLM server for a scoring request: ``extra_fields
["prompt_logprobs"]`` as ``extract_prompt_logprobs`` writes it (vllm_rollout/utils.py:540: entry j = log π(ids[j+1] |
ids[≤j]), then a dummy) and ``["num_cached_tokens"]``. Its cache holds blocks of ``block`` tokens; a request that may
read it reads the longest run of cached full blocks, at most length − 1 tokens (vLLM always computes the last), and the
positions it read hold NaN, as vLLM leaves them uninitialised (gpu_model_runner.py ``_get_prompt_logprobs_dict``).
"""

from __future__ import annotations

import asyncio
import copy as copy_module
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from verl.workers.rollout.replica import TokenOutput

from mempo_verl.memory_credit import ScoringSequence
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
    """verl's ``generate`` with vLLM's prompt log-probs and a block prefix cache (module docstring)."""

    def __init__(self, model: Any, block: int) -> None:
        self.model, self.block = model, block
        self.cached_blocks: set[tuple[int, ...]] = set()
        self.requests: list[dict] = []

    @torch.no_grad()
    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **kwargs: Any):
        ids = list(prompt_ids)
        self.requests.append(dict(sampling_params))
        cached = 0
        if not sampling_params.get("skip_reading_prefix_cache", True):
            while cached + self.block <= len(ids) - 1 and tuple(ids[: cached + self.block]) in self.cached_blocks:
                cached += self.block
        logprobs = torch.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        entries = [[logprobs[j, ids[j + 1]].item() if j >= cached else float("nan")] for j in range(len(ids) - 1)]
        for end in range(self.block, len(ids) + 1, self.block):
            self.cached_blocks.add(tuple(ids[:end]))
        return TokenOutput(
            token_ids=[0],
            extra_fields={"prompt_logprobs": entries + [[0.0]], "num_cached_tokens": cached, "global_steps": 0},
        )


class ScoringRouter:
    """verl's ``generate``: requests asking for prompt log-probs (memory-credit scoring) go to ``scorer``, the rest
    (the session's turns) to ``turns``; every scoring request's cached and prompt token counts are recorded."""

    def __init__(self, turns: Any, scorer: Any) -> None:
        self.turns, self.scorer = turns, scorer
        self.scoring: list[tuple[int, int | None]] = []
        """(prompt tokens, num_cached_tokens) of each scoring request."""

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **kwargs: Any):
        if sampling_params.get("prompt_logprobs") is None:
            return await self.turns.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params)
        output = await self.scorer.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params)
        self.scoring.append((len(prompt_ids), output.extra_fields.get("num_cached_tokens")))
        return output


def play_oracle_sessions(
    path: Any, tokenizer: Any, backend: Any, rows: Sequence[Mapping[str, Any]], **overrides: Any
) -> tuple[list[list[Segment]], list[ScoringRouter]]:
    """The ``synthetic`` oracle's sessions on ``rows`` through ``MemPOAgentLoop`` (model folder ``path``), its
    turns scripted and its scoring requests sent to ``backend``; ``overrides`` are dotted config keys.

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
    sessions, routers = [], []
    for index, row in enumerate(rows):
        router = ScoringRouter(ScriptedTurns(tokenizer, oracle_turns(row)), backend)
        loop = make_agent_loop(config, router, tokenizer, "qwen2")
        outputs = asyncio.run(loop.run(sampling_params(config), **agent_kwargs(row, uid=f"u{index}")))
        sessions.append([Segment.from_extra_fields(o.extra_fields) for o in outputs])
        routers.append(router)
    return sessions, routers
