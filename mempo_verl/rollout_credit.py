"""Memory credit at rollout (``mempo.credit.scorer: rollout``): a session's P[ans | ·] from the rollout server.

When a session ends, ``MemPOAgentLoop`` scores the same teacher-forced sequences the actor scorer would
(``memory_credit.plan_memory_credit``, one source of truth) through verl's rollout server and writes P[ans | q, mem_t]
and ε_t into each segment (``segments.SegmentCredit``); the trainer only z-scores them (A^M). Each sequence is one
``generate`` request with ``max_tokens=1`` and ``prompt_logprobs=0``: verl 0.9.1's vLLM server passes the fields to
``SamplingParams`` and returns ``extra_fields["prompt_logprobs"]`` and ``["num_cached_tokens"]``
(vllm_async_server.py:634, :704-708; verl's distillation teacher uses the same request, teacher_manager.py:55).

    P[ans | ctx] = exp( (1/|a|) Σ_{j ∈ a} log π(a_j | ctx, a_<j) )        (Eq. 4; memory_credit.geometric_mean_prob)

Prefix reuse: ``skip_reading_prefix_cache=False`` lets vLLM read its prefix cache for a prompt-log-prob request
(vllm/sampling_params.py:547 skips it by default), so the nested ε contexts [task, q, s_<t] of a session are computed
about once: the longest is sent first, then the others together. vLLM fills prompt log-probs only for the positions
it computed (gpu_model_runner.py ``_get_prompt_logprobs_dict``: from ``num_computed_tokens`` on; the cached ones
hold uninitialised memory), so a gold token's log-prob is read only where it was computed, and a request whose
cached prefix reaches a gold token is sent again without cache reads (``answer_token_logprobs``).

Which policy: the server's weights when the session ran. Under MemPO's sync trainer they are synced from the actor
before each step's generation and the update comes after the advantage, so this is π_θ_old, the policy of the step's
old log-probs and of ``scorer: actor``; the two differ by the engines' kernels only (measured in
tests/agent_loop/test_rollout_credit_vllm_on_cpu.py). vLLM's prompt log-probs are of the untempered logits, so the
two agree only at ``rollout.temperature`` 1 (``config.check_verl_config`` requires it).

Sharing across sessions: the N sessions of a prompt often score the same sequence (ε_1 = [task, q] + ans is the same in
all of them, as is a memory several sessions wrote alike). ``SharedScores`` sends each (weights version, ids) once per
agent-loop worker and lets the other sessions await its P: fewer requests, and no duplicate reaches the server, where
its cached prefix would cover the gold tokens and force a retry without cache reads.

Notation: U distinct scoring sequences of a session, L a sequence's length, B the session's segments.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import torch

from mempo_verl.memory_credit import (
    BaselineMode,
    MemoryCredit,
    ScoringSequence,
    geometric_mean_prob,
    memory_credit_from_probabilities,
    memory_reward,
    plan_memory_credit,
)
from mempo_verl.protocol import DEFAULT_TAGS, TagSet
from mempo_verl.segments import CreditStats, Segment, SegmentCredit

Generate = Callable[..., Awaitable[Any]]
"""``server_manager.generate(request_id=…, prompt_ids=…, sampling_params=…) -> TokenOutput`` (verl's
``LLMServerClient.generate``)."""

SCORING_PARAMS: dict[str, Any] = {"max_tokens": 1, "prompt_logprobs": 0, "temperature": 1.0, "detokenize": False}
"""The sampling fields of a scoring request: one generated token (the server needs one) and the log-prob of every
prompt token (``prompt_logprobs=0``: the prompt token's own, no top-k), as verl's distillation teacher asks; no
detokenisation: with cache reads vLLM 0.30 would decode the uninitialised token ids of the cached positions and its
output handler dies (OverflowError in ``convert_ids_list_to_tokens``, vllm/v1/engine/logprobs.py:146-148; seen here),
while ids and log-probs are all a score needs."""


def answer_token_logprobs(
    sequence: ScoringSequence, prompt_logprobs: Sequence[Sequence[float]], num_cached_tokens: int | None
) -> torch.Tensor | None:
    """The gold tokens' log-probs from a scoring request's prompt log-probs, or None if one was not computed.

    Args:
        sequence: the request's scoring sequence (its ``input_ids`` were the prompt).
        prompt_logprobs: `(L, 1)` verl's ``extra_fields["prompt_logprobs"]`` (vllm_rollout/utils.py
            ``extract_prompt_logprobs``): entry j = log π(input_ids[j+1] | input_ids[≤j]), the last a dummy 0.
        num_cached_tokens: prompt tokens vLLM read from its prefix cache; None = unknown (treated as all cached).

    Returns:
        `(L,)` float32 in ``memory_credit.token_logprobs``' convention (position k = log π(input_ids[k] | <k)) on the
        gold tokens, 0 elsewhere; None when a gold token's log-prob lies in the cached prefix: vLLM computes the
        log-prob of token k from position k−1, and positions below ``num_cached_tokens`` were never computed.
    """
    length = len(sequence.input_ids)
    if len(prompt_logprobs) != length:
        raise ValueError(f"prompt_logprobs has {len(prompt_logprobs)} entries for a {length}-token scoring sequence")
    gold = [k for k, flag in enumerate(sequence.answer_mask) if flag]
    computed_from = length if num_cached_tokens is None else int(num_cached_tokens)
    if gold[0] - 1 < computed_from:
        return None  # why: the first gold token's predicting position was read from cache, its log-prob is garbage
    logprobs = torch.zeros(length, dtype=torch.float32)  # (L,)
    logprobs[gold] = torch.tensor([float(prompt_logprobs[k - 1][0]) for k in gold], dtype=torch.float32)
    return logprobs


async def _score_one(generate: Generate, request_id: str, sequence: ScoringSequence) -> tuple[torch.Tensor, int, int]:
    """P[ans | ctx] of one sequence (Eq. 4) with cache reads, again without them if a gold token was cached.

    Returns:
        `()` P, the tokens the server computed over the tries, and the retries (0 or 1).
    """
    computed, retries = 0, 0
    for skip_reading in (False, True):
        params = {**SCORING_PARAMS, "skip_reading_prefix_cache": skip_reading}
        output = await generate(request_id=request_id, prompt_ids=list(sequence.input_ids), sampling_params=params)
        fields = output.extra_fields or {}
        cached = fields.get("num_cached_tokens")
        # a request that may not read the cache computed every token, whether or not the server reports it
        cached = 0 if skip_reading and cached is None else cached
        computed += len(sequence.input_ids) - (cached if cached is not None else 0)
        logprobs = answer_token_logprobs(sequence, fields["prompt_logprobs"], cached)
        if logprobs is not None:
            mask = torch.tensor(sequence.answer_mask, dtype=torch.bool)  # (L,)
            return geometric_mean_prob(logprobs.unsqueeze(0), mask.unsqueeze(0))[0], computed, retries
        retries += 1
    raise RuntimeError(f"the server reported {cached} cached tokens for a request sent without cache reads")


class SharedScores:
    """The P[ans | ctx] requests of the current weights version, shared by the sessions of one agent-loop worker.

    Keyed by the sequence's ids under one ``version`` (verl's ``global_steps``, which the server reports with every
    generation and which changes whenever weights are synced) and one event loop; a new version or loop starts an
    empty table, so the table holds at most one step's sequences and a P is never reused across weights.
    """

    def __init__(self) -> None:
        self._owner: tuple[Hashable, asyncio.AbstractEventLoop] | None = None
        self._futures: dict[tuple[int, ...], asyncio.Future[tuple[torch.Tensor, int, int]]] = {}

    def claim(
        self, version: Hashable, ids: Sequence[int]
    ) -> tuple[asyncio.Future[tuple[torch.Tensor, int, int]], bool]:
        """The future of ``ids``' score under ``version`` and whether the caller must compute it (the first asker)."""
        owner = (version, asyncio.get_running_loop())
        if owner != self._owner:
            self._owner, self._futures = owner, {}
        key = _ids_key(ids)
        future = self._futures.get(key)
        if future is not None:
            return future, False
        future = owner[1].create_future()
        self._futures[key] = future
        return future, True

    def forget(self, ids: Sequence[int]) -> None:
        """Drop a failed request, so that a later asker sends it again."""
        self._futures.pop(_ids_key(ids), None)


def _ids_key(ids: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) for i in ids)


class ScoredSequences(NamedTuple):
    """What ``score_sequences`` returns."""

    probabilities: torch.Tensor
    """`(U,)` float32 P[ans | ctx] of each sequence."""
    computed_tokens: int
    """Tokens the server computed for this session's requests (retries included; shared ones count 0)."""
    retries: int
    """Requests sent again without cache reads."""
    shared: int
    """Sequences whose P came from another session's request (``SharedScores``)."""


async def _score_or_share(
    generate: Generate,
    request_id: str,
    sequence: ScoringSequence,
    shared: SharedScores | None,
    version: Hashable | None,
) -> tuple[torch.Tensor, int, int, int]:
    """``_score_one``, or the P of an identical sequence another session asked for under the same weights.

    Returns:
        `()` P, computed tokens, retries and 1 when shared (0 otherwise).
    """
    if shared is None or version is None:
        return (*await _score_one(generate, request_id, sequence), 0)
    future, mine = shared.claim(version, sequence.input_ids)
    if not mine:
        probability, _, _ = await asyncio.shield(future)  # why: a cancelled waiter must not cancel the owner's result
        return probability, 0, 0, 1
    try:
        result = await _score_one(generate, request_id, sequence)
    except BaseException as exc:
        shared.forget(sequence.input_ids)
        future.set_exception(exc)
        future.exception()  # why: marks it retrieved; the owner re-raises below, waiters (if any) get it too
        raise
    future.set_result(result)
    return (*result, 0)


async def score_sequences(
    generate: Generate,
    request_id: str,
    sequences: Sequence[ScoringSequence],
    shared: SharedScores | None = None,
    version: Hashable | None = None,
) -> ScoredSequences:
    """P[ans | ctx] of each sequence through the rollout server: the longest first, so that its prefix blocks (the
    history every shorter ε context of the session nests in) are cached, then the others concurrently.

    Args:
        generate: the agent loop's ``server_manager.generate``.
        request_id: the session's id: verl's sticky routing sends every request to the server holding its prefix.
        sequences: `(U,)` the plan's distinct sequences.
        shared: the worker's table of requests in flight or done; None scores every sequence here.
        version: the weights version the session ran under (``global_steps``); None (unknown) shares nothing.
    """
    if not sequences:
        return ScoredSequences(torch.zeros(0), 0, 0, 0)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].input_ids))
    first = await _score_or_share(generate, request_id, sequences[order[0]], shared, version)
    rest = await asyncio.gather(
        *(_score_or_share(generate, request_id, sequences[i], shared, version) for i in order[1:])
    )
    results: list[Any] = [None] * len(sequences)
    for i, result in zip(order, [first, *rest], strict=True):
        results[i] = result
    return ScoredSequences(
        probabilities=torch.stack([r[0] for r in results]).float(),  # (U,)
        computed_tokens=sum(r[1] for r in results),
        retries=sum(r[2] for r in results),
        shared=sum(r[3] for r in results),
    )


async def score_session(
    generate: Generate,
    request_id: str,
    segments: Sequence[Segment],
    tokenizer: Any,
    baseline: BaselineMode,
    max_length: int | None,
    tags: TagSet = DEFAULT_TAGS,
    shared: SharedScores | None = None,
    version: Hashable | None = None,
) -> list[Segment]:
    """The session's segments with the rollout scorer's P[ans | q, mem_t] and ε_t (``Segment.credit``) and, on the
    last one, the scoring work (``Segment.credit_stats``).

    Args:
        generate: the agent loop's ``server_manager.generate``.
        request_id: the session's request id.
        segments: `(B,)` the session's segments in order.
        tokenizer: the policy's fast tokenizer.
        baseline: ε_t mode (``mempo.credit.baseline``).
        max_length: the scoring window (``config.scoring_window``); see ``plan_memory_credit`` for the length policy.
        tags: tag names.
        shared: the worker's ``SharedScores``; None scores every sequence of the session itself.
        version: the weights version of the session's generations (``global_steps``; None shares nothing).
    """
    started = time.perf_counter()
    # one session: every row shares its session id
    plan = plan_memory_credit(segments, [0] * len(segments), tokenizer, baseline, tags, max_length)
    scores = await score_sequences(generate, request_id, plan.sequences, shared, version)
    credit = memory_credit_from_probabilities(plan, scores.probabilities, len(segments))
    scored = [
        replace(segment, credit=SegmentCredit(float(credit.p_memory[i]), float(credit.p_baseline[i])))
        if credit.has_memory[i]
        else segment
        for i, segment in enumerate(segments)
    ]
    stats = CreditStats(
        sequences=len(plan.sequences),
        scored_tokens=sum(len(s.input_ids) for s in plan.sequences),
        computed_tokens=scores.computed_tokens,
        retries=scores.retries,
        shared=scores.shared,
        eps_truncated=plan.eps_truncated,
        too_long=plan.too_long,
        wait_s=time.perf_counter() - started,
    )
    scored[-1] = replace(scored[-1], credit_stats=stats)
    return scored


def memory_credit_from_segments(segments: Sequence[Segment | None]) -> MemoryCredit:
    """The step's ``MemoryCredit`` from the P[ans | ·] the rollout scorer wrote into the segments (Eq. 5).

    Args:
        segments: `(B,)` the step's rows; None for padding rows.

    Returns:
        ``MemoryCredit`` with NaN and ``has_memory`` False on rows without ``Segment.credit``.
    """
    p_memory = torch.full((len(segments),), float("nan"))  # (B,)
    p_baseline = torch.full((len(segments),), float("nan"))  # (B,)
    has_memory = torch.zeros(len(segments), dtype=torch.bool)  # (B,)
    for row, segment in enumerate(segments):
        if segment is not None and segment.credit is not None:
            p_memory[row], p_baseline[row] = segment.credit.p_memory, segment.credit.p_baseline
            has_memory[row] = True
    return MemoryCredit(memory_reward(p_memory, p_baseline), p_memory, p_baseline, has_memory)
