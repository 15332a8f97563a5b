"""MemPO advantages: trajectory advantage A^T, memory advantage A^M and their token-level sum (Eq. 9).

MemPO, arXiv 2603.00680 (https://arxiv.org/abs/2603.00680), "Advantages of Global Trajectory" and "Advantages of
Informative Memory". Every turn of a session is one training row (a segment); one prompt is rolled out as G
sessions.

Notation:
    B   segments (training rows) in the batch; rows of one session share `session_index`
    T   response tokens per row (right-padded)
    S   sessions in the batch (G per prompt)

    R^T_i      trajectory reward of session i (read from its final segment)
    A^T_i      = (R^T_i - mean_{j ∈ prompt(i)} R^T_j) / (std_{j ∈ prompt(i)} R^T_j + ε)      GRPO z-score
    R^M_{i,t}  = P[ans | q, mem_t] - P[ans | q, s_<t]                                      Eq. 4–5, memory_credit.py
    A^M_{i,t}  = (R^M_{i,t} - mean_group R^M) / (max(std_group R^M, σ_min) + ε)             z-score within a group
    σ_min      = ρ · mean_group sqrt(P[ans | q, mem_t]² + ε_t²)                             scoring-noise floor
    A_{i,t,k}  = A^T_i + α · 1[k ∈ <mem> span of segment (i, t)] · A^M_{i,t}                Eq. 9
                 (A^M_{i,t} := 0 where ``MemoryGate`` closes: ``task_success`` and no R^T_j > 0 in prompt(i))

A^T follows verl 0.9.1's GRPO arithmetic exactly (`core_algos.compute_grpo_outcome_advantage`, unbiased std, a
prompt with a single session keeps its raw reward), so that α = 0 reproduces verl's multi-output GRPO
(`verl.trainer.ppo.v1.utils.compute_advantage_for_multi_trajectories`). A^M groups of one member, or whose
R^M values are all equal, give A^M = 0: there is nothing to compare the memory against; groups whose R^M spread
is below the scoring-noise floor σ_min (ρ = ``MEMORY_NOISE_FLOOR``) get A^M ≈ 0 as well, instead of unit
advantages made of rounding noise.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est

from mempo_verl.config import MEMORY_NOISE_FLOOR, LossNormalization, MemoryGate, MemoryGrouping

_GROUP_KEY: dict[str, Callable[[Hashable, int], Hashable]] = {
    "group": lambda prompt, turn: prompt,
    "per_turn": lambda prompt, turn: (prompt, turn),
    "batch": lambda prompt, turn: None,
}


def _check_finite(values: torch.Tensor, name: str, rows: torch.Tensor | None = None) -> None:
    """Raise with the offending row indices instead of letting NaN/inf spread silently into the loss."""
    bad = ~torch.isfinite(values)
    if rows is not None:
        bad &= rows
    if bad.any():
        indices = torch.nonzero(bad).flatten().tolist()
        raise ValueError(f"{name} is not finite at rows {indices[:10]}{' …' if len(indices) > 10 else ''}")


def _check_rows(name: str, value: Sequence | torch.Tensor | np.ndarray, num_rows: int) -> None:
    if len(value) != num_rows:
        raise ValueError(f"{name} has {len(value)} entries, expected one per row ({num_rows})")


def group_members(group_keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """`{key: rows}`: the positions of each group's members, groups in order of first appearance."""
    members: dict[Hashable, list[int]] = {}
    for row, key in enumerate(group_keys):
        members.setdefault(key, []).append(row)
    return members


def group_zscore(
    values: torch.Tensor,
    group_keys: Sequence[Hashable],
    epsilon: float = 1e-6,
    std_floor: torch.Tensor | None = None,
) -> torch.Tensor:
    """Z-score each value within its group: (v - mean_g) / (max(std_g, σ_min,g) + ε), unbiased std.

    Args:
        values: `(N,)` float scores.
        group_keys: `(N,)` hashable group of each score.
        epsilon: guards the division when a group's scores are (nearly) equal.
        std_floor: `(N,)` each value's share of its group's floor: σ_min,g is the mean over the group's members.
            None: no floor. A group whose std is below σ_min,g is divided by σ_min,g, so its z-scores shrink to 0.

    Returns:
        `(N,)` z-scores; groups with one member or equal values get 0 (no contrast to learn from).
    """
    _check_rows("group_keys", group_keys, len(values))
    floors = torch.zeros_like(values) if std_floor is None else std_floor.to(values.dtype)
    _check_rows("std_floor", floors, len(values))
    advantages = torch.zeros_like(values)
    for rows in group_members(group_keys).values():
        if len(rows) < 2:
            continue  # a single member has no group to be compared with
        group = values[rows]
        advantages[rows] = (group - group.mean()) / (torch.maximum(group.std(), floors[rows].mean()) + epsilon)
    return advantages


def trajectory_advantage(
    session_rewards: torch.Tensor,
    prompt_index: Sequence[Hashable],
    norm_by_std: bool = True,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """A^T: GRPO advantage of each session over the sessions of its prompt.

    Args:
        session_rewards: `(S,)` trajectory reward R^T of each session.
        prompt_index: `(S,)` prompt id (verl's `uid`) of each session.
        norm_by_std: divide by the group std (GRPO); False gives Dr.GRPO's mean-only baseline.
        epsilon: std guard, as verl's GRPO.

    Returns:
        `(S,)` A^T. Same arithmetic as verl 0.9.1's `compute_grpo_outcome_advantage`, including its convention that
        a prompt with a single session keeps its raw reward (mean 0, std 1).
    """
    _check_rows("prompt_index", prompt_index, len(session_rewards))
    _check_finite(session_rewards, "trajectory reward")
    advantages = session_rewards.clone()
    for sessions in group_members(prompt_index).values():
        rewards = session_rewards[sessions]
        mean, std = (rewards.mean(), rewards.std()) if len(sessions) > 1 else (torch.tensor(0.0), torch.tensor(1.0))
        advantages[sessions] = (rewards - mean) / (std + epsilon) if norm_by_std else rewards - mean
    return advantages


def _memory_groups(
    memory_rewards: torch.Tensor,
    has_memory: torch.Tensor,
    prompt_index: Sequence[Hashable],
    turn_index: Sequence[int],
    grouping: MemoryGrouping,
) -> tuple[list[int], list[Hashable]]:
    """The rows with an R^M and each one's A^M group key; checks the inputs (shapes, grouping, finite R^M)."""
    if grouping not in _GROUP_KEY:
        raise ValueError(f"memory grouping {grouping!r} is not one of {list(get_args(MemoryGrouping))}")
    num_rows = len(memory_rewards)
    for name, value in (("has_memory", has_memory), ("prompt_index", prompt_index), ("turn_index", turn_index)):
        _check_rows(name, value, num_rows)
    has_memory = has_memory.bool()
    _check_finite(memory_rewards, "memory reward R^M", rows=has_memory)
    rows = torch.nonzero(has_memory).flatten().tolist()
    return rows, [_GROUP_KEY[grouping](prompt_index[row], int(turn_index[row])) for row in rows]


def _noise_floors(noise_scale: torch.Tensor | None, noise_floor: float, rows: list[int], num_rows: int) -> torch.Tensor:
    """`(len(rows),)` ρ · sqrt(P_mem² + ε²) of the rows with an R^M; without the scale, ρ (a scale of 1, P ≤ 1)."""
    if noise_scale is None:
        return torch.full((len(rows),), float(noise_floor))
    _check_rows("noise_scale", noise_scale, num_rows)
    _check_finite(noise_scale[rows], "noise scale")
    return noise_floor * noise_scale[rows].float()


def memory_advantage(
    memory_rewards: torch.Tensor,
    has_memory: torch.Tensor,
    prompt_index: Sequence[Hashable],
    turn_index: Sequence[int],
    grouping: MemoryGrouping = "group",
    epsilon: float = 1e-6,
    noise_scale: torch.Tensor | None = None,
    noise_floor: float = MEMORY_NOISE_FLOOR,
) -> torch.Tensor:
    """A^M: z-score of each segment's memory reward R^M within its group, its std floored at the scoring noise.

    Args:
        memory_rewards: `(B,)` R^M per segment; ignored (may be NaN) where `has_memory` is False.
        has_memory: `(B,)` bool, the segment wrote a `<mem>` block and R^M was scored.
        prompt_index: `(B,)` prompt id (`uid`) of each segment.
        turn_index: `(B,)` turn of each segment inside its session (0-based).
        grouping: which segments are compared, see `MemoryGrouping`.
        epsilon: std guard.
        noise_scale: `(B,)` sqrt(P_mem² + ε²) per segment (`MemoryCredit.noise_scale`), read where `has_memory`.
            None: 1 for every segment, an absolute floor of ρ.
        noise_floor: ρ, see `MEMORY_NOISE_FLOOR`; 0 is the plain z-score.

    Returns:
        `(B,)` A^M; 0 for segments without memory (no `<mem>` → A^T only), for single-member groups and for groups
        whose R^M are all equal; ≈ 0 for groups whose R^M spread is below σ_min (scoring noise).
    """
    rows, keys = _memory_groups(memory_rewards, has_memory, prompt_index, turn_index, grouping)
    advantages = torch.zeros(len(memory_rewards), dtype=torch.float32)
    if rows:
        floors = _noise_floors(noise_scale, noise_floor, rows, len(memory_rewards))
        advantages[rows] = group_zscore(memory_rewards[rows].float(), keys, epsilon, floors)
    return advantages


def memory_group_stats(
    memory_rewards: torch.Tensor,
    has_memory: torch.Tensor,
    prompt_index: Sequence[Hashable],
    turn_index: Sequence[int],
    grouping: MemoryGrouping = "group",
    noise_scale: torch.Tensor | None = None,
    noise_floor: float = MEMORY_NOISE_FLOOR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per A^M group of two or more members: the unbiased std of its R^M and its floor σ_min (what
    `memory_advantage` compares), for the step metrics.

    Args:
        memory_rewards, has_memory, prompt_index, turn_index, grouping, noise_scale, noise_floor: as
            `memory_advantage`.

    Returns:
        `(std, floor)`, both `(G,)`, groups in order of first appearance.
    """
    rows, keys = _memory_groups(memory_rewards, has_memory, prompt_index, turn_index, grouping)
    values = memory_rewards[rows].float()
    floors = _noise_floors(noise_scale, noise_floor, rows, len(memory_rewards))
    groups = [members for members in group_members(keys).values() if len(members) > 1]
    if not groups:
        return torch.zeros(0), torch.zeros(0)
    return torch.stack([values[g].std() for g in groups]), torch.stack([floors[g].mean() for g in groups])


def token_advantages(
    trajectory_adv: torch.Tensor,
    memory_adv: torch.Tensor,
    memory_mask: torch.Tensor,
    response_mask: torch.Tensor,
    alpha: float = 1.0,
) -> torch.Tensor:
    """Eq. 9: every generated token gets A^T; tokens inside the `<mem>` span get A^T + α·A^M.

    Args:
        trajectory_adv: `(B,)` A^T of each segment's session.
        memory_adv: `(B,)` A^M of each segment.
        memory_mask: `(B, T)` 1 on response tokens inside the `<mem>…</mem>` span (tags included).
        response_mask: `(B, T)` 1 on generated tokens, 0 on padding.
        alpha: weight of the memory advantage; α = 0 is plain GRPO in memory format.

    Returns:
        `(B, T)` token-level advantages, 0 outside `response_mask`.
    """
    if memory_mask.shape != response_mask.shape:
        raise ValueError(f"memory_mask {tuple(memory_mask.shape)} != response_mask {tuple(response_mask.shape)}")
    for name, value in (("trajectory_adv", trajectory_adv), ("memory_adv", memory_adv)):
        if value.shape != response_mask.shape[:1]:
            raise ValueError(f"{name} has shape {tuple(value.shape)}, expected ({response_mask.shape[0]},)")
    mask = response_mask.to(trajectory_adv.dtype)  # (B, T)
    # A^T on every generated token ...
    advantages = trajectory_adv.unsqueeze(-1) * mask
    # ... plus α·A^M on the tokens of the <mem> block
    advantages = advantages + alpha * memory_adv.unsqueeze(-1) * memory_mask.to(mask.dtype) * mask
    return advantages


def trajectory_mean_weights(session_index: Sequence[Hashable], response_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 10 as per-row advantage scales: N / (S · |τ_i|), N generated tokens of the batch, S sessions with at least
    one generated token, |τ_i| the generated tokens of row's session over all its segments.

    Args:
        session_index: `(B,)` session of each row.
        response_mask: `(B, T)` 1 on generated tokens.

    Returns:
        `(B,)` weights; their token-weighted mean over the batch is 1, so the loss scale matches `token_mean`.
        Rows of a session without generated tokens (verl's synthetic padding sessions, `is_padding`) get 0.
    """
    _check_rows("session_index", session_index, response_mask.shape[0])
    row_tokens = response_mask.sum(dim=-1).float()  # (B,)
    session_tokens: dict[Hashable, float] = {}
    for session, tokens in zip(session_index, row_tokens.tolist(), strict=True):
        session_tokens[session] = session_tokens.get(session, 0.0) + tokens
    # a session with no generated token is not a trajectory of Eq. 10 (verl pads the batch with such sessions):
    # counting it in S would shrink every real trajectory's weight
    num_sessions = sum(tokens > 0 for tokens in session_tokens.values())
    total_tokens = row_tokens.sum().item()
    return torch.tensor(
        [total_tokens / (num_sessions * session_tokens[s]) if session_tokens[s] > 0 else 0.0 for s in session_index]
    )


def final_segment_rows(session_index: Sequence[Hashable], turn_index: Sequence[int]) -> dict[Hashable, int]:
    """Row of each session's last turn: the trajectory reward is computed there (verl's agent-loop postprocess)."""
    _check_rows("turn_index", turn_index, len(session_index))
    final: dict[Hashable, tuple[int, int]] = {}
    for row, (session, turn) in enumerate(zip(session_index, turn_index, strict=True)):
        if session not in final or final[session][0] < turn:
            final[session] = (int(turn), row)
    return {session: row for session, (_, row) in final.items()}


def _prompt_has_success(
    session_rewards: torch.Tensor, session_prompts: Sequence[Hashable], segment_prompts: Sequence[Hashable]
) -> torch.Tensor:
    """`(B,)` bool: the segment's prompt has a session with R^T > 0 (``MemoryGate`` ``task_success``)."""
    succeeded = {prompt for prompt, reward in zip(session_prompts, session_rewards.tolist(), strict=True) if reward > 0}
    return torch.tensor([prompt in succeeded for prompt in segment_prompts], dtype=torch.bool)


@dataclass(frozen=True)
class MemPOAdvantage:
    """Every advantage quantity of one step, computed once: the estimator returns `tokens`, the trainer's metrics and
    credit dump read the rest.

    Attributes:
        tokens: `(B, T)` A of Eq. 9 (and Eq. 10's scale under ``trajectory_mean``), 0 outside the response mask.
        trajectory: `(B,)` A^T of each segment's session.
        memory: `(B,)` A^M of each segment after ``MemoryGate`` (0 without memory credit).
        memory_gated: `(B,)` bool, a memory segment whose A^M the gate set to 0.
        memory_group_std: `(G,)` unbiased std of R^M in each A^M group of two or more members (before the gate).
        memory_group_floor: `(G,)` each such group's noise floor σ_min.
    """

    tokens: torch.Tensor
    trajectory: torch.Tensor
    memory: torch.Tensor
    memory_gated: torch.Tensor
    memory_group_std: torch.Tensor
    memory_group_floor: torch.Tensor


def mempo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Sequence[Hashable],
    session_index: Sequence[Hashable] | None = None,
    turn_index: Sequence[int] | None = None,
    memory_mask: torch.Tensor | None = None,
    memory_rewards: torch.Tensor | None = None,
    has_memory: torch.Tensor | None = None,
    alpha: float = 1.0,
    memory_grouping: MemoryGrouping = "group",
    norm_adv_by_std_in_grpo: bool = True,
    epsilon: float = 1e-6,
    loss_normalization: LossNormalization = "token_mean",
    memory_noise_scale: torch.Tensor | None = None,
    memory_noise_floor: float = MEMORY_NOISE_FLOOR,
    memory_gate: MemoryGate = "always",
) -> MemPOAdvantage:
    """The MemPO advantage of a batch of segments: 1. R^T per session from its final segment; 2. A^T = GRPO over the
    sessions of each prompt, broadcast to every segment of the session; 3. A^M = z-score of R^M per group, then the
    gate; 4. Eq. 9 token sum; 5. Eq. 10 (optional).

    Args:
        token_level_rewards: `(B, T)` verl's rewards; the row sum of a session's final segment is R^T.
        response_mask: `(B, T)` 1 on generated tokens.
        index: `(B,)` prompt id (`uid`) of each segment.
        session_index: `(B,)` session of each segment. None: every row is its own session (how verl's generic
            estimator dispatch calls us; the MemPO trainer always passes it).
        turn_index: `(B,)` turn of each segment in its session. None: all 0.
        memory_mask: `(B, T)` 1 inside the `<mem>` span. None: no memory credit (A^M = 0).
        memory_rewards: `(B,)` R^M (Eq. 4–5). None: no memory credit.
        has_memory: `(B,)` bool, R^M is defined for the segment. None: True where `memory_mask` has a token.
        alpha: weight α of A^M on `<mem>` tokens.
        memory_grouping: see `MemoryGrouping`.
        norm_adv_by_std_in_grpo: GRPO std normalisation of A^T (False: Dr.GRPO).
        epsilon: std guard for both z-scores.
        loss_normalization: see `LossNormalization`; `trajectory_mean` scales each row by Eq. 10's weight.
        memory_noise_scale: `(B,)` sqrt(P_mem² + ε²) per segment (`MemoryCredit.noise_scale`); None: 1.
        memory_noise_floor: ρ of A^M's noise floor σ_min = ρ · mean_group scale, see `MEMORY_NOISE_FLOOR`.
        memory_gate: which prompts' segments keep their A^M, see `MemoryGate`.
    """
    num_rows = token_level_rewards.shape[0]
    if response_mask.shape != token_level_rewards.shape:
        raise ValueError(
            f"response_mask {tuple(response_mask.shape)} != token_level_rewards {tuple(token_level_rewards.shape)}"
        )
    _check_rows("index", index, num_rows)
    if loss_normalization not in get_args(LossNormalization):
        allowed = list(get_args(LossNormalization))
        raise ValueError(f"loss_normalization {loss_normalization!r} is not one of {allowed}")
    if memory_gate not in get_args(MemoryGate):
        raise ValueError(f"memory_gate {memory_gate!r} is not one of {list(get_args(MemoryGate))}")
    index = list(index)
    session_index = list(range(num_rows)) if session_index is None else list(session_index)
    turn_index = [0] * num_rows if turn_index is None else [int(turn) for turn in turn_index]
    _check_rows("session_index", session_index, num_rows)

    with torch.no_grad():
        # 1. R^T of each session, read on its final segment
        final_rows = final_segment_rows(session_index, turn_index)
        sessions = list(final_rows)
        session_rewards = token_level_rewards[[final_rows[s] for s in sessions]].sum(dim=-1)  # (S,)
        session_prompts = [index[final_rows[s]] for s in sessions]

        # 2. A^T per session (GRPO over the prompt's sessions), given to every segment of the session
        session_adv = trajectory_advantage(session_rewards, session_prompts, norm_adv_by_std_in_grpo, epsilon)
        position = {session: i for i, session in enumerate(sessions)}
        segment_traj_adv = session_adv[[position[s] for s in session_index]]  # (B,)

        # 3. A^M per segment, then the gate
        no_group = torch.zeros(0)
        segment_mem_adv = torch.zeros(num_rows, dtype=segment_traj_adv.dtype)
        gated = torch.zeros(num_rows, dtype=torch.bool)
        group_std, group_floor = no_group, no_group
        if memory_mask is None or memory_rewards is None:
            memory_mask = torch.zeros_like(response_mask)
        else:
            if has_memory is None:
                has_memory = (memory_mask * response_mask).sum(dim=-1) > 0
            groups = (memory_rewards, has_memory, index, turn_index, memory_grouping)
            noise = {"noise_scale": memory_noise_scale, "noise_floor": memory_noise_floor}
            segment_mem_adv = memory_advantage(*groups, epsilon=epsilon, **noise).to(segment_traj_adv.dtype)
            group_std, group_floor = memory_group_stats(*groups, **noise)
            if memory_gate == "task_success":
                gated = has_memory.bool() & ~_prompt_has_success(session_rewards, session_prompts, index)
                segment_mem_adv = segment_mem_adv.masked_fill(gated, 0.0)

        # 4. Eq. 9
        advantages = token_advantages(segment_traj_adv, segment_mem_adv, memory_mask, response_mask, alpha)

        # 5. Eq. 10 (optional): every trajectory weighs the same in the loss
        if loss_normalization == "trajectory_mean":
            advantages = advantages * trajectory_mean_weights(session_index, response_mask).unsqueeze(-1)
    return MemPOAdvantage(advantages, segment_traj_adv, segment_mem_adv, gated, group_std, group_floor)


@register_adv_est("mempo")
def compute_mempo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    config: Any = None,
    reward_baselines: torch.Tensor | None = None,
    **mempo_inputs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MemPO advantage for a batch of segments, registered with verl as `"mempo"`: `mempo_advantage(...).tokens`.

    Args:
        token_level_rewards, response_mask, index: as `mempo_advantage`.
        config: verl's `AlgoConfig`, read for `norm_adv_by_std_in_grpo` when given (as verl's estimators do).
        reward_baselines: passed by verl's generic dispatch when the batch has them (ray_trainer.compute_advantage
            ~L258); unused: MemPO's baseline is the group mean.
        **mempo_inputs: the keyword arguments of `mempo_advantage` (a misspelt one raises its TypeError).

    Returns:
        `(advantages, returns)`, both `(B, T)` (returns = advantages, as verl's GRPO).
    """
    if config is not None:
        default = mempo_inputs.get("norm_adv_by_std_in_grpo", True)
        mempo_inputs["norm_adv_by_std_in_grpo"] = config.get("norm_adv_by_std_in_grpo", default)
    advantages = mempo_advantage(token_level_rewards, response_mask, index, **mempo_inputs).tokens
    return advantages, advantages
