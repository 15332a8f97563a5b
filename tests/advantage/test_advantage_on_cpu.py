"""MemPO advantages against hand computations, against verl 0.9.1's multi-output GRPO, and their invariances."""

import math

import numpy as np
import pytest
import torch
from verl.protocol import DataProto
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

import mempo_verl  # noqa: F401  registers "mempo"
from mempo_verl.advantage import (
    compute_mempo_advantage,
    final_segment_rows,
    group_zscore,
    memory_advantage,
    memory_group_stats,
    mempo_advantage,
    token_advantages,
    trajectory_advantage,
    trajectory_mean_weights,
)
from mempo_verl.config import MEMORY_NOISE_FLOOR

EPS = 1e-6


def test_group_zscore_by_hand():
    values = torch.tensor([1.0, 3.0, 5.0, 7.0, 2.0, 2.0])
    keys = ["a", "a", "a", "single", "equal", "equal"]
    out = group_zscore(values, keys, epsilon=EPS)
    # group a: mean 3, unbiased std sqrt((4 + 0 + 4) / 2) = 2 -> (-1, 0, 1)
    torch.testing.assert_close(out[:3], torch.tensor([-1.0, 0.0, 1.0]) * (2 / (2 + EPS)))
    assert out[3] == 0  # a single member has nothing to be compared with
    assert torch.equal(out[4:], torch.zeros(2))  # equal values: 0 / (0 + ε) = 0


def test_trajectory_advantage_matches_grpo_by_hand():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0])
    prompts = ["p", "p", "q", "q", "r"]
    out = trajectory_advantage(rewards, prompts, epsilon=EPS)
    # p: mean 0.5, unbiased std sqrt(0.25 + 0.25) = 0.7071 -> ±0.5 / 0.7071 = ±0.7071
    assert out[0].item() == pytest.approx(math.sqrt(0.5), rel=1e-5)
    assert out[1].item() == pytest.approx(-math.sqrt(0.5), rel=1e-5)
    # q: all correct -> no signal
    assert out[2].item() == 0 and out[3].item() == 0
    # r: a single session keeps its raw reward, as verl's GRPO (mean 0, std 1)
    assert out[4].item() == pytest.approx(1.0 / (1.0 + EPS))


def test_trajectory_advantage_without_std_is_dr_grpo():
    out = trajectory_advantage(torch.tensor([1.0, 0.0, 0.0]), ["p", "p", "p"], norm_by_std=False)
    # mean 1/3 subtracted, no scaling
    torch.testing.assert_close(out, torch.tensor([2 / 3, -1 / 3, -1 / 3]))


def test_memory_advantage_groupings_by_hand():
    # two prompts; prompt p has 2 sessions x 2 turns, prompt q one segment; row 5 has no <mem>
    r_m = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, float("nan")])
    has_mem = torch.tensor([True, True, True, True, True, False])
    prompts = ["p", "p", "p", "p", "q", "q"]
    turns = [0, 1, 0, 1, 0, 1]

    group = memory_advantage(r_m, has_mem, prompts, turns, "group", epsilon=0.0)
    # p: values .1 .3 .5 .7, mean .4, unbiased std sqrt((.09+.01+.01+.09)/3) = 0.2582
    std = math.sqrt(0.2 / 3)
    torch.testing.assert_close(group[:4], torch.tensor([-0.3, -0.1, 0.1, 0.3]) / std)
    assert group[4] == 0  # q has a single <mem> segment
    assert group[5] == 0  # no <mem> -> A^T only (its NaN R^M is never read)

    per_turn = memory_advantage(r_m, has_mem, prompts, turns, "per_turn", epsilon=0.0)
    # turn 0 of p: (.1, .5) -> mean .3, std sqrt(.08) -> ∓0.7071; turn 1 of p: (.3, .7) likewise
    half = math.sqrt(0.5)
    torch.testing.assert_close(per_turn[:4], torch.tensor([-half, -half, half, half]))

    batch = memory_advantage(r_m, has_mem, prompts, turns, "batch", epsilon=0.0)
    # all five <mem> rows together: mean .5, std sqrt((.16+.04+0+.04+.16)/4) = sqrt(.1)
    torch.testing.assert_close(batch[:5], torch.tensor([-0.4, -0.2, 0.0, 0.2, 0.4]) / math.sqrt(0.1))


def test_token_advantages_eq9_by_hand():
    a_t = torch.tensor([1.0, -2.0])
    a_m = torch.tensor([0.5, 3.0])
    memory_mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]])
    response_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    out = token_advantages(a_t, a_m, memory_mask, response_mask, alpha=2.0)
    expected = torch.tensor(
        [
            [1 + 2 * 0.5, 1 + 2 * 0.5, 1.0, 0.0],  # <mem> tokens get A^T + α A^M; padding gets 0
            [-2.0, -2 + 2 * 3.0, -2 + 2 * 3.0, -2.0],
        ]
    )
    torch.testing.assert_close(out, expected)


def test_final_segment_rows_picks_last_turn_in_any_order():
    assert final_segment_rows(["a", "b", "a", "a", "b"], [1, 0, 0, 2, 1]) == {"a": 3, "b": 4}


def _multi_turn_batch(seed: int = 0):
    """Random sessions of 1-3 segments; verl copies the session's reward onto every segment's last token."""
    generator = torch.Generator().manual_seed(seed)
    rows = []  # (uid, session, turn, reward)
    for prompt in range(3):
        for session in range(4):
            reward = float(torch.randint(0, 2, (1,), generator=generator)) * (1 + prompt)  # non-binary across prompts
            for turn in range(int(torch.randint(1, 4, (1,), generator=generator))):
                rows.append((f"uid{prompt}", session, turn, reward))
    num_rows, width = len(rows), 6
    lengths = torch.randint(1, width + 1, (num_rows,), generator=generator)
    response_mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()
    token_level_rewards = torch.zeros(num_rows, width)
    token_level_rewards[torch.arange(num_rows), lengths - 1] = torch.tensor([r[3] for r in rows])
    return rows, token_level_rewards, response_mask


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_alpha_zero_equals_verl_multi_output_grpo(norm_by_std):
    rows, rewards, response_mask = _multi_turn_batch()
    data = DataProto.from_dict(
        tensors={"token_level_rewards": rewards.clone(), "response_mask": response_mask.clone()},
        non_tensors={"uid": np.array([r[0] for r in rows], dtype=object)},
    )
    keys = [f"{uid}_{session}_{turn}" for uid, session, turn, _ in rows]
    verl_out = compute_advantage_for_multi_trajectories(
        data, batch_keys=keys, adv_estimator="grpo", norm_adv_by_std_in_grpo=norm_by_std
    )

    memory_mask = (torch.rand(rewards.shape) > 0.5).long()  # α = 0 must ignore memory entirely
    ours, returns = compute_mempo_advantage(
        rewards,
        response_mask,
        index=np.array([r[0] for r in rows], dtype=object),
        session_index=[(r[0], r[1]) for r in rows],
        turn_index=[r[2] for r in rows],
        memory_mask=memory_mask,
        memory_rewards=torch.randn(len(rows)),
        alpha=0.0,
        norm_adv_by_std_in_grpo=norm_by_std,
    )
    torch.testing.assert_close(ours, verl_out.batch["advantages"], rtol=0, atol=1e-6)
    torch.testing.assert_close(returns, verl_out.batch["returns"], rtol=0, atol=1e-6)


def test_memory_tokens_differ_by_alpha_times_memory_advantage():
    rows, rewards, response_mask = _multi_turn_batch(seed=1)
    memory_mask = torch.zeros_like(response_mask)
    memory_mask[:, :2] = 1  # first two tokens of each response are the <mem> block
    memory_rewards = torch.linspace(-1, 1, len(rows))
    kwargs = dict(
        index=np.array([r[0] for r in rows], dtype=object),
        session_index=[(r[0], r[1]) for r in rows],
        turn_index=[r[2] for r in rows],
        memory_mask=memory_mask,
        memory_rewards=memory_rewards,
    )
    with_memory, _ = compute_mempo_advantage(rewards, response_mask, alpha=0.5, **kwargs)
    without, _ = compute_mempo_advantage(rewards, response_mask, alpha=0.0, **kwargs)
    a_m = memory_advantage(memory_rewards, memory_mask.sum(-1) > 0, kwargs["index"], kwargs["turn_index"])
    expected_delta = 0.5 * a_m.unsqueeze(-1) * memory_mask * response_mask
    torch.testing.assert_close(with_memory - without, expected_delta)


def test_permuting_rows_permutes_advantages():
    rows, rewards, response_mask = _multi_turn_batch(seed=2)
    memory_mask = (torch.arange(rewards.shape[1]) < 2).long().expand_as(response_mask)
    memory_rewards = torch.randn(len(rows), generator=torch.Generator().manual_seed(3))
    index = np.array([r[0] for r in rows], dtype=object)
    sessions = [(r[0], r[1]) for r in rows]
    turns = [r[2] for r in rows]
    inputs = {"session_index": sessions, "turn_index": turns, "memory_mask": memory_mask, "alpha": 1.0}
    base, _ = compute_mempo_advantage(rewards, response_mask, index, memory_rewards=memory_rewards, **inputs)
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(4))
    p = perm.tolist()
    permuted, _ = compute_mempo_advantage(
        rewards[perm],
        response_mask[perm],
        index[p],
        session_index=[sessions[i] for i in p],
        turn_index=[turns[i] for i in p],
        memory_mask=memory_mask[perm],
        memory_rewards=memory_rewards[perm],
        alpha=1.0,
    )
    torch.testing.assert_close(permuted, base[perm])


def test_task_success_gate_keeps_memory_advantage_only_where_a_session_succeeded():
    # prompt p: sessions R^T 1 and 0; prompt q: both 0. One segment per session, 3 tokens, the first 2 are <mem>.
    rewards = torch.tensor([[0, 0, 1.0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    response_mask = torch.ones(4, 3)
    memory_mask = torch.tensor([[1, 1, 0]] * 4)
    inputs = dict(
        index=["p", "p", "q", "q"],
        session_index=[0, 1, 2, 3],
        memory_mask=memory_mask,
        memory_rewards=torch.tensor([0.2, 0.6, 0.1, 0.5]),
        memory_noise_floor=0.0,
    )
    gated = mempo_advantage(rewards, response_mask, memory_gate="task_success", **inputs)
    always = mempo_advantage(rewards, response_mask, **inputs)
    # by hand: each prompt's R^M pair (a, a + 0.4) has mean a + 0.2 and unbiased std sqrt(2 * 0.2² / 1) = 0.2 * √2,
    # so A^M = ∓1/√2; p's A^T = ±1/√2 (rewards 1, 0: mean 0.5, std 1/√2), q's A^T = 0
    z = 1 / math.sqrt(2)
    torch.testing.assert_close(always.memory, torch.tensor([-z, z, -z, z]), atol=1e-5, rtol=0)
    torch.testing.assert_close(gated.memory, torch.tensor([-z, z, 0.0, 0.0]), atol=1e-5, rtol=0)
    assert gated.memory_gated.tolist() == [False, False, True, True]
    assert not always.memory_gated.any()
    torch.testing.assert_close(gated.trajectory, torch.tensor([z, -z, 0.0, 0.0]), atol=1e-5, rtol=0)
    # q's <mem> tokens get A^T (0) alone under the gate; the A^M groups' statistics are the ungated ones
    torch.testing.assert_close(gated.tokens[2:], torch.zeros(2, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(gated.tokens[0], torch.tensor([0.0, 0.0, z]), atol=1e-5, rtol=0)
    torch.testing.assert_close(gated.memory_group_std, always.memory_group_std)
    with pytest.raises(ValueError, match=r"memory_gate 'sometimes' is not one of \['always', 'task_success'\]"):
        mempo_advantage(rewards, response_mask, memory_gate="sometimes", **inputs)


def test_misspelt_estimator_argument_raises():
    with pytest.raises(TypeError, match="memory_grouppng"):
        compute_mempo_advantage(torch.zeros(1, 2), torch.ones(1, 2), np.array(["u"]), memory_grouppng="batch")


def test_registered_in_verl():
    assert get_adv_estimator_fn("mempo") is compute_mempo_advantage


def test_verl_generic_dispatch_treats_rows_as_sessions():
    # verl's compute_advantage calls a registered estimator with only rewards, mask, uid and config
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    mask = torch.ones(2, 2)
    adv, _ = get_adv_estimator_fn("mempo")(
        token_level_rewards=rewards, response_mask=mask, index=np.array(["u", "u"]), config=None
    )
    # one prompt, rewards (1, 0): ±0.7071 on every token, no memory credit
    torch.testing.assert_close(adv, torch.tensor([[1.0, 1.0], [-1.0, -1.0]]) * math.sqrt(0.5), atol=1e-5, rtol=0)


def test_bad_input_gives_clear_errors():
    mask = torch.ones(2, 3)
    with pytest.raises(ValueError, match="trajectory reward is not finite at rows \\[1\\]"):
        compute_mempo_advantage(torch.tensor([[0, 0, 1.0], [0, 0, float("nan")]]), mask, np.array(["u", "u"]))
    with pytest.raises(ValueError, match="index has 1 entries, expected one per row \\(2\\)"):
        compute_mempo_advantage(torch.zeros(2, 3), mask, np.array(["u"]))
    with pytest.raises(ValueError, match="response_mask"):
        compute_mempo_advantage(torch.zeros(2, 3), torch.ones(2, 4), np.array(["u", "u"]))
    with pytest.raises(ValueError, match="memory reward R\\^M is not finite at rows \\[0\\]"):
        memory_advantage(torch.tensor([float("inf"), 0.0]), torch.tensor([True, True]), ["u", "u"], [0, 1])
    with pytest.raises(ValueError, match="not one of \\['group', 'per_turn', 'batch'\\]"):
        memory_advantage(torch.zeros(1), torch.ones(1, dtype=torch.bool), ["u"], [0], grouping="prompt")
    with pytest.raises(ValueError, match="memory_mask \\(2, 2\\) != response_mask \\(2, 3\\)"):
        token_advantages(torch.zeros(2), torch.zeros(2), torch.zeros(2, 2), mask)


def test_trajectory_mean_weights_eq10_by_hand():
    # session a: rows of 3 and 1 generated tokens (|τ_a| = 4); session b: one row of 2 tokens (|τ_b| = 2)
    response_mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    weights = trajectory_mean_weights(["a", "a", "b"], response_mask)
    # N = 6 tokens, S = 2 sessions: w_a = 6 / (2·4) = 0.75, w_b = 6 / (2·2) = 1.5
    torch.testing.assert_close(weights, torch.tensor([0.75, 0.75, 1.5]))
    # a token-mean over the weighted tokens is the mean over trajectories of each trajectory's token mean
    token_loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [5.0, 7.0, 0.0]])
    weighted_token_mean = (token_loss * weights[:, None] * response_mask).sum() / response_mask.sum()
    assert weighted_token_mean.item() == pytest.approx(((1 + 2 + 3 + 4) / 4 + (5 + 7) / 2) / 2)


def test_trajectory_mean_scales_the_advantages():
    rows, rewards, response_mask = _multi_turn_batch(seed=5)
    kwargs = {
        "index": np.array([r[0] for r in rows], dtype=object),
        "session_index": [(r[0], r[1]) for r in rows],
        "turn_index": [r[2] for r in rows],
    }
    plain, _ = compute_mempo_advantage(rewards, response_mask, **kwargs)
    scaled, _ = compute_mempo_advantage(rewards, response_mask, loss_normalization="trajectory_mean", **kwargs)
    weights = trajectory_mean_weights(kwargs["session_index"], response_mask)
    torch.testing.assert_close(scaled, plain * weights[:, None])
    with pytest.raises(ValueError, match="loss_normalization 'seq_mean'"):
        compute_mempo_advantage(rewards, response_mask, loss_normalization="seq_mean", **kwargs)


def test_trajectory_mean_ignores_padding_sessions():
    # two real sessions of 2 generated tokens each, then verl's two synthetic padding sessions (response mask 0)
    response_mask = torch.tensor([[1, 1], [1, 0], [1, 0], [0, 0], [0, 0]])
    sessions = ["a", "b", "b", "pad_0", "pad_1"]
    weights = trajectory_mean_weights(sessions, response_mask)
    # N = 4 tokens, S = 2 trajectories (padding is none): w_a = 4 / (2·2) = 1, w_b = 4 / (2·2) = 1; padding 0
    torch.testing.assert_close(weights, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))
    # token-weighted mean of the weights over the generated tokens is 1, as Eq. 10 promises
    assert (weights[:, None] * response_mask).sum().item() / response_mask.sum().item() == pytest.approx(1.0)


def test_memory_advantage_below_the_noise_floor_is_near_zero():
    # R^M differing by 1e-5 (P_mem 0.5 ± 1e-5, ε 0.2), far below what bf16 scoring resolves (≈ 1-2 % of P)
    p_mem = torch.tensor([0.5, 0.50001, 0.49999, 0.5], dtype=torch.float64)
    eps_t = torch.full((4,), 0.2, dtype=torch.float64)
    r_m = (p_mem - eps_t).float()  # [0.3, 0.30001, 0.29999, 0.3]
    scale = torch.sqrt(p_mem**2 + eps_t**2).float()  # sqrt(0.25 + 0.04) = 0.5385 for each
    args = (torch.ones(4, dtype=torch.bool), ["p"] * 4, [0, 1, 0, 1])
    out = memory_advantage(r_m, *args, noise_scale=scale)
    # std 8.2e-6 < σ_min = ρ · 0.5385 = 0.01077 (ρ = 0.02): the deviations ±1e-5 are divided by σ_min + ε
    sigma_min = MEMORY_NOISE_FLOOR * math.sqrt(0.29)
    torch.testing.assert_close(out, torch.tensor([0.0, 1e-5, -1e-5, 0.0]) / (sigma_min + EPS), rtol=0, atol=1e-5)
    assert out.abs().max() < 1e-2  # ≈ 0, where the plain z-score gave unit advantages:
    plain = memory_advantage(r_m, *args, noise_floor=0.0)
    # (±1e-5) / (sqrt(2e-10 / 3) + 1e-6) = ±1.0911 (float32 rounding of 0.30001 moves it by ~0.2 %)
    torch.testing.assert_close(plain, torch.tensor([0.0, 1.0911, -1.0911, 0.0]), rtol=0, atol=5e-3)
    # without a scale the floor is absolute, ρ: ±1e-5 / (0.02 + 1e-6)
    torch.testing.assert_close(memory_advantage(r_m, *args), torch.tensor([0.0, 5e-4, -5e-4, 0.0]), rtol=0, atol=1e-5)


def test_noise_floor_leaves_real_spreads_alone_and_shrinks_small_ones():
    # std above the floor: the plain z-score, (v - mean) / (std + ε)
    values = torch.tensor([0.1, 0.3, 0.5, 0.7])
    std = math.sqrt(0.2 / 3)  # 0.2582 > σ_min = 0.02 · 1
    out = memory_advantage(values, torch.ones(4, dtype=torch.bool), ["g"] * 4, [0] * 4, noise_scale=torch.ones(4))
    torch.testing.assert_close(out, torch.tensor([-0.3, -0.1, 0.1, 0.3]) / (std + EPS))
    # std under the floor: divided by the floor, the mean of the members' shares. (1.0, 1.5): std 0.3536 < (1 + 2) / 2
    out = group_zscore(torch.tensor([1.0, 1.5]), ["g", "g"], epsilon=0.0, std_floor=torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(out, torch.tensor([-0.25, 0.25]) / 1.5)


def test_memory_group_stats_against_a_loop():
    r_m = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, float("nan"), 0.2, 0.6])
    scale = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.3, float("nan"), 0.2, 0.4])
    has_mem = torch.tensor([True, True, True, True, True, False, True, True])
    prompts = ["p", "p", "p", "p", "q", "q", "r", "r"]
    turns = [0, 1, 0, 1, 0, 1, 0, 0]
    # group: p has 4 values, q a single one (no group), r two: (.2, .6) -> sqrt(0.08); floors 0.02 · mean scale
    std, floor = memory_group_stats(r_m, has_mem, prompts, turns, "group", noise_scale=scale, noise_floor=0.02)
    torch.testing.assert_close(std, torch.tensor([math.sqrt(0.2 / 3), math.sqrt(0.08)]))
    torch.testing.assert_close(floor, torch.tensor([0.02 * 0.75, 0.02 * 0.3]))
    # per_turn, by a plain loop over (prompt, turn) groups
    groups: dict = {}
    for value, s, mem, prompt, turn in zip(r_m.tolist(), scale.tolist(), has_mem.tolist(), prompts, turns, strict=True):
        if mem:
            groups.setdefault((prompt, turn), []).append((value, s))
    expected_std, expected_floor = [], []
    for members in groups.values():
        if len(members) > 1:
            mean = sum(v for v, _ in members) / len(members)
            expected_std.append(math.sqrt(sum((v - mean) ** 2 for v, _ in members) / (len(members) - 1)))
            expected_floor.append(0.02 * sum(s for _, s in members) / len(members))
    std, floor = memory_group_stats(r_m, has_mem, prompts, turns, "per_turn", noise_scale=scale, noise_floor=0.02)
    torch.testing.assert_close(std, torch.tensor(expected_std))
    torch.testing.assert_close(floor, torch.tensor(expected_floor))
