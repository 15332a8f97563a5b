"""A vLLM logits processor that makes a request generate given tokens: the server side of the rollout scorer.

A request whose ``SamplingParams.extra_args`` holds ``FORCED_TOKENS_KEY: [a_1, …, a_K]`` (and ``max_tokens=K``)
samples a_k at its k-th step: every other logit is set to −inf after vLLM has taken the step's log-probs. Under
``logprobs_mode=raw_logprobs``, which the recipes set, those are of the raw logits (vllm/v1/sample/sampler.py
``Sampler.forward`` computes them before any logits processor; verl's default, ``processed_logprobs``, after it).
So the sampled-token log-probs verl returns (``logprobs=True``) are log π(a_k | prompt, a_<k), each from logits the
server computed in that request, never read from its prefix cache.

Loaded by vLLM's engine, in its worker process, from ``actor_rollout_ref.rollout.engine_kwargs.vllm.logits_processors``
(``rollout_credit.FORCED_TOKENS_PROCESSOR``, which recipes/base/mempo_defaults.yaml lists); requests without the key
are left alone. Only vLLM imports this module: the rest of the package must import without vLLM (an SGLang rollout).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from mempo_verl.rollout_credit import FORCED_TOKENS_KEY


class ForcedTokens(AdapterLogitsProcessor):
    """Per request with ``extra_args[FORCED_TOKENS_KEY]``: at output step k, only that list's k-th token is allowed."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        forced = (sampling_params.extra_args or {}).get(FORCED_TOKENS_KEY)
        if forced is None:
            return
        if not forced or not all(isinstance(t, int) and t >= 0 for t in forced):
            raise ValueError(f"extra_args[{FORCED_TOKENS_KEY!r}] must be a non-empty list of token ids, got {forced!r}")
        if sampling_params.max_tokens != len(forced):
            raise ValueError(
                f"a request forcing {len(forced)} tokens must set max_tokens={len(forced)}, "
                f"got {sampling_params.max_tokens}"
            )

    def is_argmax_invariant(self) -> bool:
        return False  # it picks the token

    def new_req_logits_processor(self, params: SamplingParams) -> Callable[[list[int], torch.Tensor], Any] | None:
        forced = (params.extra_args or {}).get(FORCED_TOKENS_KEY)
        if forced is None:
            return None

        def force(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            """logits: `(V,)` this request's row; output_ids: the tokens it has generated so far."""
            step = len(output_ids)
            if step < len(forced):
                # in place: vLLM took the step's raw log-probs before this; any finite value makes the token certain
                logits.fill_(float("-inf"))
                logits[forced[step]] = 0.0
            return logits

        return force
