"""Eval settings (mempo_verl/eval/config.py) and the verl config each method runs under (mempo_verl/eval/loop.py)."""

import pytest

from mempo_verl.config import MemPOConfig
from mempo_verl.eval import BackendConfig, BudgetConfig, EvalConfig, SamplingConfig
from mempo_verl.eval.loop import sampling_params, trainer_config

BACKEND = BackendConfig(model="m")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BackendConfig(kind="openai", model="m"), "backend.url"),
        (lambda: BackendConfig(kind="grpc", model="m"), "local, openai"),
        (lambda: BackendConfig(model="m", url="http://x"), "backend.url"),
        (lambda: BackendConfig(model="m", concurrency=0), "backend.concurrency"),
        (lambda: BackendConfig(model="m", dtype="fp8"), "backend.dtype"),
        (lambda: SamplingConfig(top_k=0), "sampling.top_k"),
        (lambda: BudgetConfig(turn_tokens=0), "budget.turn_tokens"),
        (lambda: EvalConfig(backend=BACKEND, out_dir="o", methods=("memory", "react")), "methods"),
        (lambda: EvalConfig(backend=BACKEND, out_dir="o", objectives=(0,)), "objectives"),
        (lambda: EvalConfig(backend=BACKEND, out_dir="o", objective_score="max"), "mean, sum"),
        (lambda: EvalConfig(backend=BACKEND, out_dir="o", overrides=("mempo.context.policy=full",)), "methods"),
    ],
)
def test_bad_settings_name_the_field(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_fingerprint_ignores_what_does_not_change_results():
    base = EvalConfig(backend=BACKEND, out_dir="a")
    same = EvalConfig(
        backend=BackendConfig(model="m", concurrency=64, timeout_s=5, max_retries=0),
        out_dir="b",
        methods=("memory",),
        objectives=(16,),
        max_examples=3,
        objective_score="sum",
    )
    assert base.fingerprint() == same.fingerprint() and base.fingerprint_hash() == same.fingerprint_hash()
    assert EvalConfig(backend=BACKEND, out_dir="a", seed=1).fingerprint() != base.fingerprint()


def test_each_method_gets_its_policy_and_budgets():
    budget = BudgetConfig(max_turns=5, prompt_length=3000, turn_tokens=200, full_response_length=4000)
    config = EvalConfig(
        backend=BACKEND,
        out_dir="o",
        budget=budget,
        sampling=SamplingConfig(temperature=0.5, top_k=20),
        overrides=("mempo.context.retain_turns=3",),
    )
    memory, full = trainer_config(config, "memory"), trainer_config(config, "full")
    rollout = memory.actor_rollout_ref.rollout
    assert (rollout.prompt_length, rollout.response_length) == (3000, 200)  # one turn's context and generation
    assert full.actor_rollout_ref.rollout.response_length == 4000  # the whole appended trajectory
    for trainer, policy in ((memory, "memory"), (full, "full")):
        mempo = MemPOConfig.from_config(trainer.mempo)
        assert (mempo.context.policy, mempo.context.retain_turns) == (policy, 3)
        assert (mempo.agent.max_turns, mempo.agent.max_turn_tokens) == (5, 200)  # every turn capped alike
    assert sampling_params(memory) == dict(temperature=0.5, top_p=1.0, top_k=20, repetition_penalty=1.0, logprobs=False)


def test_a_bad_override_fails_before_any_episode():
    config = EvalConfig(backend=BACKEND, out_dir="o", overrides=("mempo.credit.grouping=nope",))
    with pytest.raises(ValueError, match="mempo.credit.grouping"):
        trainer_config(config, "memory")
