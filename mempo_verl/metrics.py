"""The `mempo/*` metrics of one training step (DESIGN §6); the README's glossary defines each name.

Notation: B rows (segments) of the step, T response tokens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import torch

from mempo_verl.advantage import MemPOAdvantage
from mempo_verl.memory_credit import MemoryCredit
from mempo_verl.segments import TERMINATION_REASONS, Segment


def _mean_std(prefix: str, values: torch.Tensor) -> dict[str, float]:
    if values.numel() == 0:
        return {}
    std = values.std().item() if values.numel() > 1 else 0.0
    return {f"{prefix}/mean": values.mean().item(), f"{prefix}/std": std}


def episode_metrics(
    segments: list[Segment | None], session_rewards: torch.Tensor, prompts: Sequence[Hashable]
) -> dict[str, float]:
    """Per-trajectory numbers read from each session's last segment.

    Args:
        segments: `(B,)` segment metadata, None for padding rows.
        session_rewards: `(B,)` R^T of each row's session (verl copies the session's reward to every segment).
        prompts: `(B,)` prompt id (verl's `uid`) of each row.
    """
    last = [(row, s) for row, s in enumerate(segments) if s is not None and s.is_last]
    if not last:
        return {}
    episodes = [s.episode for _, s in last]
    prompt_rewards: dict[Hashable, set[float]] = {}
    for row, _ in last:
        prompt_rewards.setdefault(prompts[row], set()).add(session_rewards[row].item())
    metrics = {
        "mempo/reward_T/mean": session_rewards[[row for row, _ in last]].float().mean().item(),
        # GRPO's signal: with two or more sessions a prompt, only these prompts get a non-zero A^T
        "mempo/reward_T/mixed_prompts": sum(len(r) > 1 for r in prompt_rewards.values()) / len(prompt_rewards),
        "mempo/turns/mean": sum(e.num_turns for e in episodes) / len(episodes),
        "mempo/tokens_total/mean": sum(e.total_tokens for e in episodes) / len(episodes),  # TT
        "mempo/tokens_peak/mean": sum(e.peak_tokens for e in episodes) / len(episodes),  # PT
        "mempo/tokens_peak/max": max(e.peak_tokens for e in episodes),
        "mempo/format_valid/rate": sum(bool(s.format_valid) for _, s in last) / len(last),
        "mempo/env_failures/mean": sum(e.env_failures for e in episodes) / len(episodes),
        "mempo/memory_truncations/mean": sum(e.memory_truncations for e in episodes) / len(episodes),
    }
    reasons = Counter(s.termination for _, s in last)
    metrics.update({f"mempo/termination/{r}": reasons.get(r, 0) / len(last) for r in TERMINATION_REASONS})
    # what failed, not only how often: each failure kind (`Observation.error`, e.g. not_found, retriever_unavailable)
    # per session, so a dead service shows apart from the model's own bad calls
    errors = Counter(t.observation_error for s in segments if s is not None for t in s.turns if t.observation_error)
    metrics.update({f"mempo/env_failures/{kind}": count / len(episodes) for kind, count in sorted(errors.items())})
    memory_tokens = [t.memory_tokens for s in segments if s is not None for t in s.turns]
    if memory_tokens:
        metrics["mempo/memory_tokens/mean"] = sum(memory_tokens) / len(memory_tokens)
    return metrics


def credit_metrics(
    credit: MemoryCredit, advantage: MemPOAdvantage, memory_mask: torch.Tensor, response_mask: torch.Tensor
) -> dict[str, float]:
    """Memory-credit and advantage statistics.

    Args:
        credit: R^M, P[ans|mem] and ε per row.
        advantage: the step's advantages (`advantage.mempo_advantage`): A^M, the gate, the A^M groups' R^M std and
            noise floor σ_min, the final `(B, T)` token advantages.
        memory_mask: `(B, T)` 1 inside `<mem>` spans.
        response_mask: `(B, T)` 1 on generated tokens.
    """
    memory_adv, advantages = advantage.memory, advantage.tokens
    group_std, group_floor = advantage.memory_group_std, advantage.memory_group_floor
    rows = credit.has_memory
    metrics: dict[str, float] = {"mempo/memory_credit/coverage": rows.float().mean().item() if len(rows) else 0.0}
    metrics.update(_mean_std("mempo/reward_M", credit.memory_reward[rows]))
    if group_std.numel():
        # the spread A^M's z-score divides by; groups under the floor get A^M shrunk by std / σ_min
        metrics["mempo/reward_M/group_std/mean"] = group_std.mean().item()
        metrics["mempo/reward_M/group_std/min"] = group_std.min().item()
        metrics["mempo/reward_M/group_std/max"] = group_std.max().item()
        metrics["mempo/adv_M/noise_floor/mean"] = group_floor.mean().item()
        metrics["mempo/adv_M/floored_groups"] = (group_std < group_floor).float().mean().item()
    metrics.update(_mean_std("mempo/p_ans_mem", credit.p_memory[rows]))
    metrics.update(_mean_std("mempo/epsilon", credit.p_baseline[rows]))
    metrics.update(_mean_std("mempo/adv_M", memory_adv[rows]))
    if rows.any():
        metrics["mempo/adv_M/gated"] = advantage.memory_gated[rows].float().mean().item()
    in_memory = (memory_mask * response_mask).bool()
    outside = response_mask.bool() & ~in_memory
    if in_memory.any():
        metrics["mempo/adv/memory_tokens/mean"] = advantages[in_memory].mean().item()
    if outside.any():
        metrics["mempo/adv/other_tokens/mean"] = advantages[outside].mean().item()
    return metrics


def rollout_scoring_metrics(segments: list[Segment | None]) -> dict[str, float]:
    """The step's memory-credit work under ``scorer: rollout``, summed over the sessions' ``CreditStats``; the same
    names as the actor scorer's (``MemPOTrainer._memory_credit``), ``computed_tokens`` net of prefix reuse.

    Args:
        segments: `(B,)` segment metadata, None for padding rows.
    """
    stats = [s.credit_stats for s in segments if s is not None and s.is_last and s.credit_stats is not None]
    return {
        "mempo/memory_credit/sequences": sum(s.sequences for s in stats),
        "mempo/memory_credit/segments": sum(s is not None and s.credit is not None for s in segments),
        "mempo/memory_credit/scored_tokens": sum(s.scored_tokens for s in stats),
        "mempo/memory_credit/computed_tokens": sum(s.computed_tokens for s in stats),
        "mempo/memory_credit/shared": sum(s.shared for s in stats),
        "mempo/credit_eps_truncated": sum(s.eps_truncated for s in stats),
        "mempo/memory_credit/too_long": sum(s.too_long for s in stats),
        # what scoring adds after a session's last turn; the step's generation ends with its slowest session
        "mempo/memory_credit/wait_s/mean": sum(s.wait_s for s in stats) / len(stats) if stats else 0.0,
        "mempo/memory_credit/wait_s/max": max((s.wait_s for s in stats), default=0.0),
    }
