"""Memory credit at rollout (``mempo.credit.scorer: rollout``): a session's P[ans | ·] from the rollout server.

When a session ends, ``MemPOAgentLoop`` scores the same teacher-forced sequences the actor scorer would
(``memory_credit.plan_memory_credit``, one source of truth) through verl's rollout server and writes P[ans | q, mem_t]
and ε_t into each segment (``segments.SegmentCredit``); the trainer only z-scores them (A^M). Each sequence is one
``generate`` request whose prompt is the sequence up to its first gold token and which must generate the gold tokens
(``forced_tokens.ForcedTokens``, a vLLM logits processor) with ``logprobs=True``: verl 0.9.1's vLLM server passes the
fields to ``SamplingParams`` and returns each generated token's log-prob and ``extra_fields["num_cached_tokens"]``
(vllm_async_server.py:622, :704-713). The server's ``logprobs_mode`` must be ``raw_logprobs`` (taken before any
logits processor; verl's default, ``processed_logprobs``, would return the forced 0), which the recipes set
(recipes/base/mempo_defaults.yaml) and ``config.check_verl_config`` requires.

    P[ans | ctx] = exp( (1/|a|) Σ_{j ∈ a} log π(a_j | ctx, a_<j) )        (Eq. 4; memory_credit.geometric_mean_prob)

Why generate rather than ask for prompt log-probs: a prompt-log-prob request makes vLLM compute the log-softmax over
the vocabulary at every computed prompt position and return one Python ``Logprob`` per prompt position, cached ones
included (vllm/v1/engine/logprobs.py ``_update_prompt_logprobs``), so its cost grows with the scored tokens (~t²)
however much the prefix cache saves. The generated answer costs |a| log-probs and |a| − 1 decode steps per request
(BENCHMARKS §3d: 7.4x faster with Qwen2.5's 151 k vocabulary at 8 turns; 1.25x slower on the tiny world's 640-token
vocabulary, whose answers take ~31 tokens). Every gold log-prob comes from logits the request computed (vLLM
always computes a prompt's last position), so cache reads never reach a gold token.

Prefix reuse: ``skip_reading_prefix_cache=False`` lets the request read vLLM's prefix cache, so the nested ε contexts
[task, q, s_<t] of a session are computed about once: the longest is sent first, then the others together.

Which policy: the server's weights when the session ran. Under MemPO's sync trainer they are synced from the actor
before each step's generation and the update comes after the advantage, so this is π_θ_old, the policy of the step's
old log-probs and of ``scorer: actor``; the two differ by the engines' kernels only (measured in
tests/agent_loop/test_rollout_credit_vllm_on_cpu.py). The raw log-probs are of the untempered logits, so the two
agree only at ``rollout.temperature`` 1 (``config.check_verl_config`` requires it).

Sharing across sessions: the N sessions of a prompt often score the same sequence (ε_1 = [task, q] + ans is the same in
all of them, as is a memory several sessions wrote alike). ``SharedScores`` sends each (weights version, ids) once per
agent-loop worker and lets the other sessions await its P: fewer requests and generated tokens.

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

FORCED_TOKENS_KEY = "mempo_forced_tokens"
"""The ``SamplingParams.extra_args`` key holding the token ids a scoring request must generate, in order."""

FORCED_TOKENS_PROCESSOR = "mempo_verl.forced_tokens:ForcedTokens"
"""vLLM's ``logits_processors`` name of ``forced_tokens.ForcedTokens``, which the rollout server must load."""

SCORING_PARAMS: dict[str, Any] = {"temperature": 0.0, "logprobs": True, "ignore_eos": True, "detokenize": False,
                                  "skip_reading_prefix_cache": False}  # fmt: skip
"""The sampling fields every scoring request shares (``scoring_request`` adds the gold tokens): greedy, which the
forcing decides anyway and which skips random sampling over the vocabulary; each generated token's own log-prob
(verl turns ``logprobs=True`` into ``logprobs=0``); no end at an EOS token inside the gold; no detokenisation (ids
and log-probs are all a score needs); prefix-cache reads on (vLLM skips them by default only for prompt log-probs)."""


def gold_span(sequence: ScoringSequence) -> tuple[int, int]:
    """``[start, end)`` of the sequence's gold tokens (contiguous: they cover one character span of the response)."""
    mask = sequence.answer_mask
    start = mask.index(1)
    end = len(mask) - mask[::-1].index(1)
    if not all(mask[start:end]):
        raise ValueError(f"ScoringSequence: the gold tokens must be contiguous, got answer_mask {list(mask)}")
    return start, end


def scoring_request(sequence: ScoringSequence) -> tuple[list[int], dict[str, Any]]:
    """The ``generate`` arguments that score ``sequence``: its ids before the gold as the prompt, the gold tokens
    forced one per step (``forced_tokens``), so that output log-prob k is log π(a_k | ctx, a_<k).

    Returns:
        ``(prompt_ids, sampling_params)``.
    """
    start, end = gold_span(sequence)
    gold = list(sequence.input_ids[start:end])
    params = {**SCORING_PARAMS, "max_tokens": len(gold), "extra_args": {FORCED_TOKENS_KEY: gold}}
    return list(sequence.input_ids[:start]), params


async def _score_one(generate: Generate, request_id: str, sequence: ScoringSequence) -> tuple[torch.Tensor, int]:
    """P[ans | ctx] of one sequence (Eq. 4) from one forced-answer request.

    Returns:
        `()` P, and the tokens the server computed: the prompt past its cached prefix, then every generated token
        but the last (each step computes the previous token).

    Raises:
        RuntimeError: the server did not generate the gold tokens (its ``logits_processors`` lack ``ForcedTokens``)
            or returned no log-prob for each of them.
    """
    prompt_ids, params = scoring_request(sequence)
    gold = params["extra_args"][FORCED_TOKENS_KEY]
    output = await generate(request_id=request_id, prompt_ids=prompt_ids, sampling_params=params)
    if list(output.token_ids) != gold:
        raise RuntimeError(
            f"memory-credit scoring: the rollout server generated {list(output.token_ids)[:8]}… instead of the gold "
            f"tokens {gold[:8]}…; scorer=rollout needs actor_rollout_ref.rollout.engine_kwargs.vllm.logits_processors "
            f"to list {FORCED_TOKENS_PROCESSOR!r} (recipes/base/mempo_defaults.yaml sets it)"
        )
    if output.log_probs is None or len(output.log_probs) != len(gold):
        raise RuntimeError(f"memory-credit scoring: expected {len(gold)} log-probs, got {output.log_probs!r}")
    cached = int((output.extra_fields or {}).get("num_cached_tokens") or 0)
    logprobs = torch.tensor([output.log_probs], dtype=torch.float32)  # (1, |a|)
    probability = geometric_mean_prob(logprobs, torch.ones_like(logprobs, dtype=torch.bool))[0]
    return probability, len(prompt_ids) - cached + len(gold) - 1


class SharedScores:
    """The P[ans | ctx] requests of the current weights version, shared by the sessions of one agent-loop worker.

    Keyed by the sequence's ids under one ``version`` (verl's ``global_steps``, which the server reports with every
    generation and which changes whenever weights are synced) and one event loop; a new version or loop starts an
    empty table, so the table holds at most one step's sequences and a P is never reused across weights.
    """

    def __init__(self) -> None:
        self._owner: tuple[Hashable, asyncio.AbstractEventLoop] | None = None
        self._futures: dict[tuple[int, ...], asyncio.Future[tuple[torch.Tensor, int]]] = {}

    def claim(self, version: Hashable, ids: Sequence[int]) -> tuple[asyncio.Future[tuple[torch.Tensor, int]], bool]:
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
    """Tokens the server computed for this session's requests (shared ones count 0)."""
    shared: int
    """Sequences whose P came from another session's request (``SharedScores``)."""


async def _score_or_share(
    generate: Generate,
    request_id: str,
    sequence: ScoringSequence,
    shared: SharedScores | None,
    version: Hashable | None,
) -> tuple[torch.Tensor, int, int]:
    """``_score_one``, or the P of an identical sequence another session asked for under the same weights.

    Returns:
        `()` P, computed tokens and 1 when shared (0 otherwise).
    """
    if shared is None or version is None:
        return (*await _score_one(generate, request_id, sequence), 0)
    future, mine = shared.claim(version, sequence.input_ids)
    if not mine:
        probability, _ = await asyncio.shield(future)  # why: a cancelled waiter must not cancel the owner's result
        return probability, 0, 1
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
        return ScoredSequences(torch.zeros(0), 0, 0)
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
        shared=sum(r[2] for r in results),
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
