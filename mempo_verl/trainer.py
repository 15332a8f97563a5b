"""MemPOTrainer: verl 0.9.1's synchronous V1 trainer with MemPO's memory credit and advantage in the step.

Only the steps that must change are overridden (STYLE §3). verl's `compute_advantage_for_multi_trajectories`
broadcasts a session's advantage only for the exact estimator name "grpo" and calls any other estimator row by row
without the session structure, so MemPO owns `_compute_advantage`:

    1. read the step's rows (rewards, masks, the segment metadata the agent loop wrote into `extra_fields`)
    2. KL-in-reward and rollout correction exactly as verl does (verl's own functions)
    3. memory credit (Eq. 4–5): teacher-forced scoring sequences for every `<mem>` segment, scored in ONE batched
       `compute_log_prob` call of the actor (the π that generated them; `scorer: ref` uses the reference policy)
       -> R^M per segment; under `scorer: rollout` the agent loop already scored them at session end
       (`rollout_credit.py`) and this step only reads them from the segments
    4. the `mempo` advantage: A^T per session (GRPO over the prompt's sessions) + α·A^M on `<mem>` tokens (Eq. 9)
    5. write advantages back to TransferQueue, log the mempo/* metrics

and, under `mempo.update.mini_batch: prompts` (DESIGN §3 "updates per step"), `_get_required_batch_multiple` and
`_update_actor`: verl V1 sizes PPO mini-batches in rows (ppo_mini_batch_size × n), but a step's row count is its
segment count, which changes with the episodes' turns; MemPO keeps K = train_batch_size / ppo_mini_batch_size
optimizer updates per step, as in verl's single-turn recipes, each over B / K rows.

Notation: B rows (segments) in the step, T response tokens, U unique scoring sequences, K mini-batches per step.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transfer_queue as tq
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.protocol import DataProto
from verl.trainer.distillation import is_distillation_enabled
from verl.trainer.ppo.ray_trainer import apply_kl_penalty
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.metric import reduce_metrics
from verl.utils.py_functional import rename_dict
from verl.utils.tensordict_utils import list_of_dict_to_tensordict
from verl.workers.utils.padding import response_from_nested, response_to_nested

from mempo_verl.advantage import mempo_advantage
from mempo_verl.config import check_verl_config, mempo_section, model_positions, scoring_window
from mempo_verl.memory_credit import (
    MemoryCredit,
    ScoringSequence,
    geometric_mean_prob,
    memory_credit_from_probabilities,
    plan_memory_credit,
)
from mempo_verl.metrics import credit_metrics, episode_metrics, rollout_scoring_metrics
from mempo_verl.rollout_credit import memory_credit_from_segments
from mempo_verl.segments import Segment
from mempo_verl.values import as_python

logger = logging.getLogger(__name__)

_ADVANTAGE_FIELDS = ["uid", "session_id", "extra_fields", "response_mask", "rm_scores", "rollout_log_probs",
                     "old_log_probs", "ref_log_prob", "values"]  # fmt: skip


@dataclass
class StepRows:
    """A step's rows as the advantage step reads them (``MemPOTrainer._read_rows``)."""

    proto: DataProto
    """Padded tensors (``response_mask``, ``token_level_scores``, log-probs, ...) and ``uid``; `(B, T)` each."""
    nested_response_mask: torch.Tensor
    """The nested `(B, ragged)` response mask, to write fields back in TransferQueue's layout."""
    sessions: list[tuple[Any, int]]
    """`(B,)` (uid, session id) of each row."""
    segments: list[Segment | None]
    """`(B,)` each row's segment metadata (``extra_fields``); None for verl's padding rows."""
    response_lengths: list[int]
    """`(B,)` generated tokens of each row."""


def memory_token_mask(segments: list[Segment | None], response_lengths: list[int], width: int) -> torch.Tensor:
    """`(B, T)` 1 on the response tokens of each memory segment's `<mem>…</mem>` block (tags included)."""
    mask = torch.zeros(len(segments), width, dtype=torch.int64)
    for row, (segment, length) in enumerate(zip(segments, response_lengths, strict=True)):
        turn = segment.credited_turn if segment is not None else None
        if turn is None or turn.mem_span is None:
            continue  # padding, a `sequence` row (no single <mem> to credit) or no <mem>: A^T only
        start, end = turn.mem_span
        mask[row, start : min(end, length)] = 1
    return mask


def credited_turn_indices(segments: list[Segment | None]) -> list[int]:
    """`(B,)` the turn index (``TurnRecord.turn_index``, as the credit plan reads it) of each row's credited turn;
    0 for padding and `sequence` rows, which have no A^M to group (`per_turn` A^M grouping keys on it)."""
    turns = [None if segment is None else segment.credited_turn for segment in segments]
    return [0 if turn is None else turn.turn_index for turn in turns]


def dump_credit(
    path: Path,
    keys: list[str],
    sessions: list[Any],
    segments: list[Segment | None],
    credit: MemoryCredit,
    memory_adv: torch.Tensor,
    advantages: torch.Tensor,
    response_lengths: list[int],
    rewards: torch.Tensor,
    token_ids: list[tuple[list[int], list[int]]],
) -> None:
    """One JSON line per (non-padding) row: what credit assignment saw and gave, for inspection and e2e tests;
    ``token_ids`` holds each row's (prompt ids, response ids), so a row can be scored again under any weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for row, segment in enumerate(segments):
            if segment is None:
                continue
            record = {
                "key": keys[row],
                "session": list(sessions[row]),
                "segment_index": segment.segment_index,
                "is_last": segment.is_last,
                "question": segment.question_text,
                "mem_span": segment.credited_turn.mem_span if segment.credited_turn is not None else None,
                "reward": rewards[row].item(),
                "has_memory": bool(credit.has_memory[row]),
                "memory_reward": credit.memory_reward[row].item() if credit.has_memory[row] else None,
                "p_memory": credit.p_memory[row].item() if credit.has_memory[row] else None,
                "p_baseline": credit.p_baseline[row].item() if credit.has_memory[row] else None,
                "memory_advantage": memory_adv[row].item(),
                "advantages": advantages[row, : response_lengths[row]].tolist(),
                "prompt_ids": token_ids[row][0],
                "response_ids": token_ids[row][1],
            }
            out.write(json.dumps(record) + "\n")


def prompt_mini_batches(train_batch_size: int, ppo_mini_batch_size: int) -> int:
    """K, the optimizer updates per step when `ppo_mini_batch_size` counts prompts: train_batch_size / it."""
    if ppo_mini_batch_size < 1 or train_batch_size % ppo_mini_batch_size:
        raise ValueError(
            f"mempo.update.mini_batch=prompts needs data.train_batch_size ({train_batch_size}) to be a multiple of "
            f"actor_rollout_ref.actor.ppo_mini_batch_size ({ppo_mini_batch_size}): K = their ratio updates per step"
        )
    return train_batch_size // ppo_mini_batch_size


def rows_per_mini_batch(num_rows: int, mini_batches: int, dp_size: int) -> int:
    """B / K rows in each of the step's K mini-batches; verl's worker splits them evenly over dp ranks."""
    if num_rows % (mini_batches * dp_size):
        raise ValueError(
            f"{num_rows} rows cannot form {mini_batches} mini-batches over {dp_size} data-parallel ranks "
            "(_get_required_batch_multiple pads the step to a multiple of their product)"
        )
    return num_rows // mini_batches


def fixed_micro_batch_multiple(
    dp_size: int, mini_batches: int, update_micro: int, infer_micros: tuple[int, ...]
) -> int:
    """The row multiple a step needs when verl's micro-batches are fixed (``use_dynamic_bsz`` off).

    verl's engine asserts that every rank's rows divide into micro-batches (engine/utils.py `prepare_micro_batches`):
    a rank's share of one of the K mini-batches into ``update_micro`` rows, its share of the step into each
    log-prob micro-batch size (old log-probs, reference, memory-credit scoring). A row count set by the episodes'
    turns meets none of these by itself, so the step is padded (with zero-loss rows) to
    dp × lcm(K × update_micro, *infer_micros).
    """
    return dp_size * math.lcm(mini_batches * update_micro, *infer_micros)


def scoring_row(sequence: ScoringSequence) -> dict[str, torch.Tensor]:
    """A scoring sequence laid out as an agent-loop row: the fields verl's actor reads in `compute_log_prob`."""
    input_ids = torch.tensor(sequence.input_ids, dtype=torch.int64)
    response_length = len(sequence.input_ids) - sequence.prompt_length
    return {
        "prompts": input_ids[: sequence.prompt_length],
        "responses": input_ids[sequence.prompt_length :],
        "response_mask": torch.ones(response_length, dtype=torch.int64),
        "loss_mask": torch.ones(response_length, dtype=torch.int64),
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "position_ids": torch.arange(len(input_ids), dtype=torch.int64),
    }


@register_trainer("mempo")
class MemPOTrainer(PPOTrainerSync):
    """verl's sync trainer (colocated rollout) plus MemPO's memory credit and advantage; select it with
    `trainer.v1.trainer_mode=mempo` and `algorithm.adv_estimator=mempo`."""

    def __init__(self, config):
        super().__init__(config)
        self.mempo = mempo_section(config)
        check_verl_config(self.mempo, config)
        # the most tokens of a scoring sequence (plan_memory_credit's length policy)
        self.scoring_window = scoring_window(
            self.mempo, config, model_positions(str(config.actor_rollout_ref.model.path))
        )
        self.mini_batches: int | None = None  # K under `mempo.update.mini_batch: prompts`; None: verl's row count
        if self.mempo.update.mini_batch == "prompts":
            if self.use_critic or is_distillation_enabled(config.get("distillation")):
                raise ValueError(
                    "mempo.update.mini_batch=prompts sizes the actor update only: use mempo.update.mini_batch=rows "
                    "with a critic or distillation"
                )
            self.mini_batches = prompt_mini_batches(
                config.data.train_batch_size, config.actor_rollout_ref.actor.ppo_mini_batch_size
            )

    def _actor_dp_size(self) -> int:
        """Data-parallel ranks of the actor (as verl's `_balance_batch` reads them)."""
        return max(self.actor_rollout_wg._query_dispatch_info("actor")) + 1

    # ------------------------------------------------------------------------------------------- mini-batches
    def _micro_batch_sizes(self) -> tuple[int, tuple[int, ...]] | None:
        """(update, (log-prob ...)) micro-batch sizes per GPU when fixed; None under dynamic batch sizes."""
        aro = self.config.actor_rollout_ref
        if aro.actor.use_dynamic_bsz or aro.rollout.log_prob_use_dynamic_bsz:
            return None
        infer = [aro.rollout.log_prob_micro_batch_size_per_gpu, aro.ref.get("log_prob_micro_batch_size_per_gpu")]
        return int(aro.actor.ppo_micro_batch_size_per_gpu or 1), tuple(int(m) for m in infer if m)

    def _get_required_batch_multiple(self, dp_size: int) -> int:
        """verl pads the step's rows to this multiple (padding rows carry no loss): dp × K under `prompts`, and
        a multiple of the fixed micro-batch sizes (``fixed_micro_batch_multiple``)."""
        if self.mini_batches is None:
            return super()._get_required_batch_multiple(dp_size)
        micro = self._micro_batch_sizes()
        if micro is None:
            return dp_size * self.mini_batches
        return fixed_micro_batch_multiple(dp_size, self.mini_batches, micro[0], micro[1])

    def _update_actor(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        """verl's actor update (trainer_base.py `_update_actor`) with K mini-batches of B / K rows under `prompts`."""
        if self.mini_batches is None:
            return super()._update_actor(batch, metrics)
        actor = self.config.actor_rollout_ref.actor
        mini_batch_rows = rows_per_mini_batch(len(batch), self.mini_batches, self._actor_dp_size())
        batch.extra_info.update(
            {
                "calculate_entropy": actor.calculate_entropy or actor.entropy_coeff != 0.0,
                "global_batch_size": mini_batch_rows,
                "mini_batch_size": mini_batch_rows,
                "epochs": actor.ppo_epochs,
                "seed": actor.data_loader_seed,
                "dataloader_kwargs": {"shuffle": actor.shuffle},
                "temperature": self.config.actor_rollout_ref.rollout.temperature,
            }
        )
        output = rename_dict(self.actor_rollout_wg.update_actor(batch)["metrics"], "actor/")
        output["perf/mfu/actor"] = output.pop("actor/mfu")
        metrics.update(reduce_metrics(output))
        metrics["mempo/update/mini_batches"] = self.mini_batches
        metrics["mempo/update/rows_per_mini_batch"] = mini_batch_rows
        return batch

    # -------------------------------------------------------------------------------------------- memory credit
    def _answer_probabilities(self, sequences: tuple[ScoringSequence, ...], partition_id: str) -> torch.Tensor:
        """P[ans | ctx] of each sequence (Eq. 4), through verl's actor (or reference) log-prob computation.

        Returns:
            `(U,)` geometric mean of the gold-token probabilities.
        """
        micro = self._micro_batch_sizes()
        # the FSDP workers deadlock on a row count not divisible by dp (VERL_NOTES.md), and fixed micro-batches
        # must divide each rank's rows: repeat the last sequence
        multiple = self._actor_dp_size() * (math.lcm(*micro[1]) if micro and micro[1] else 1)
        padded = list(sequences) + [sequences[-1]] * (-len(sequences) % multiple)
        keys = [f"mempo-score-{uuid.uuid4().hex}-{i}" for i in range(len(padded))]
        tags = [{"status": "success", "seq_len": len(s.input_ids), "is_padding": False} for s in padded]
        tq.kv_batch_put(
            keys=keys, partition_id=partition_id, fields=list_of_dict_to_tensordict([scoring_row(s) for s in padded]),
            tags=tags,
        )  # fmt: skip
        meta = KVBatchMeta(
            partition_id=partition_id,
            keys=keys,
            tags=tags,
            extra_info={
                "calculate_entropy": False,
                "compute_loss": False,
                "temperature": self.config.actor_rollout_ref.rollout.temperature,
            },
        )
        try:
            if self.mempo.credit.scorer == "ref" and not self.ref_in_actor:
                self.ref_policy_wg.compute_ref_log_prob(meta)
            else:
                if self.mempo.credit.scorer == "ref":
                    meta.extra_info["no_lora_adapter"] = True
                self.actor_rollout_wg.compute_log_prob(meta)
            data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["log_probs", "response_mask"])
        finally:
            tq.kv_clear(keys=keys, partition_id=partition_id)
        response_logprobs = response_from_nested(data["log_probs"], data["response_mask"])  # nested (U', T_ans)
        probabilities = []
        for sequence, logprobs in zip(sequences, response_logprobs.unbind(), strict=False):
            answer_mask = torch.tensor(sequence.answer_mask[sequence.prompt_length :], dtype=torch.bool)
            probabilities.append(geometric_mean_prob(logprobs.float().unsqueeze(0), answer_mask.unsqueeze(0))[0])
        return torch.stack(probabilities)

    def _memory_credit(
        self, segments: list[Segment | None], sessions: list[Any], partition_id: str, metrics: dict
    ) -> MemoryCredit:
        """R^M per row (Eq. 5): read from the segments (``scorer: rollout``, scored at session end) or scored here
        by the actor / reference in one batched call."""
        started = time.perf_counter()
        if self.mempo.credit.scorer == "rollout":
            credit = memory_credit_from_segments(segments)
            metrics.update(rollout_scoring_metrics(segments))
            metrics["timing_s/memory_credit"] = time.perf_counter() - started
            return credit
        # α = 0 (GRPO in memory format): A^M is never used, so nothing is scored
        rows = segments if self.mempo.credit.alpha != 0 else [None] * len(segments)
        plan = plan_memory_credit(
            rows, sessions, self.tokenizer, self.mempo.credit.baseline, self.mempo.tags, max_length=self.scoring_window
        )
        if plan.sequences:
            probabilities = self._answer_probabilities(plan.sequences, partition_id)
        else:
            probabilities = torch.zeros(0)
        credit = memory_credit_from_probabilities(plan, probabilities, len(segments))
        scored_tokens = sum(len(s.input_ids) for s in plan.sequences)
        metrics["mempo/memory_credit/sequences"] = len(plan.sequences)
        metrics["mempo/memory_credit/segments"] = len(plan.memory_rows)
        metrics["mempo/memory_credit/scored_tokens"] = scored_tokens
        metrics["mempo/memory_credit/computed_tokens"] = scored_tokens  # the actor recomputes every token
        metrics["mempo/credit_eps_truncated"] = plan.eps_truncated
        metrics["mempo/memory_credit/too_long"] = plan.too_long
        metrics["timing_s/memory_credit"] = time.perf_counter() - started
        return credit

    # ------------------------------------------------------------------------------------------------ advantage
    def _read_rows(self, batch: KVBatchMeta) -> StepRows:
        """Step 1: the step's rows from TransferQueue; padding rows (verl's batch upsampling) carry a copied
        ``extra_fields``, so they get no segment and are never credited."""
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=_ADVANTAGE_FIELDS)
        nested_response_mask = data["response_mask"]
        is_padding = [tag.get("is_padding", False) for tag in batch.tags]
        uids = as_python(data["uid"])
        sessions = [(uid, int(session)) for uid, session in zip(uids, as_python(data["session_id"]), strict=True)]
        segments = [
            None if padding else Segment.from_extra_fields(extra)
            for padding, extra in zip(is_padding, as_python(data["extra_fields"]), strict=True)
        ]
        tensors = {k: data[k] for k in data.keys() if k not in ("uid", "session_id", "extra_fields")}
        proto = DataProto(batch=TensorDict(tensors, batch_size=len(batch)).to_padded_tensor())
        proto.non_tensor_batch["uid"] = np.array(uids, dtype=object)
        proto.batch["token_level_scores"] = proto.batch["rm_scores"]
        return StepRows(proto, nested_response_mask, sessions, segments, nested_response_mask.offsets().diff().tolist())

    def _verl_reward_terms(self, proto: DataProto, metrics: dict) -> tuple[DataProto, list[str]]:
        """Step 2, the one place that mirrors verl: KL-in-reward and rollout correction exactly as verl 0.9.1's
        ``trainer_base.py`` ``_compute_advantage`` (L1753-1772, its own functions). Returns the rows and the fields
        beyond ``advantages`` / ``returns`` that its write-back (L1786-1791) sends too."""
        fields = []
        if self.config.algorithm.use_kl_in_reward:
            proto, kl_metrics = apply_kl_penalty(
                proto, kl_ctrl=self.kl_ctrl_in_reward, kl_penalty=self.config.algorithm.kl_penalty
            )
            metrics.update(kl_metrics)
            fields.append("token_level_rewards")
        else:
            proto.batch["token_level_rewards"] = proto.batch["token_level_scores"]
        rollout_corr = self.config.algorithm.get("rollout_correction", None)
        if (
            rollout_corr is not None
            and "rollout_log_probs" in proto.batch
            and not rollout_corr.get("bypass_mode", False)
        ):
            proto, is_metrics = compute_rollout_correction_and_add_to_batch(proto, rollout_corr)
            metrics.update(is_metrics)
            fields.append("response_mask")
            if "rollout_is_weights" in proto.batch:
                fields.append("rollout_is_weights")
        return proto, fields

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        """MemPO's advantage step (module docstring, steps 1–5)."""
        rows = self._read_rows(batch)  # 1
        segments = rows.segments
        proto, extra_fields = self._verl_reward_terms(rows.proto, metrics)  # 2
        credit = self._memory_credit(segments, rows.sessions, batch.partition_id, metrics)  # 3: R^M (Eq. 4–5)

        # 4. every advantage quantity once (A^T, A^M, Eq. 9): the loss, the metrics and the dump read the same
        response_mask = proto.batch["response_mask"]
        memory_mask = memory_token_mask(segments, rows.response_lengths, response_mask.shape[1])
        advantage = mempo_advantage(
            token_level_rewards=proto.batch["token_level_rewards"],
            response_mask=response_mask,
            index=list(proto.non_tensor_batch["uid"]),
            session_index=rows.sessions,
            turn_index=credited_turn_indices(segments),
            memory_mask=memory_mask,
            memory_rewards=credit.memory_reward,
            has_memory=credit.has_memory,
            alpha=self.mempo.credit.alpha,
            memory_grouping=self.mempo.credit.grouping,
            loss_normalization=self.mempo.credit.loss_normalization,
            memory_noise_scale=credit.noise_scale,
            memory_noise_floor=self.mempo.credit.memory_noise_floor,
            memory_gate=self.mempo.credit.memory_gate,
            norm_adv_by_std_in_grpo=self.config.algorithm.get("norm_adv_by_std_in_grpo", True),
        )
        proto.batch["advantages"] = proto.batch["returns"] = advantage.tokens  # returns = advantages, as GRPO
        rewards = proto.batch["token_level_scores"].sum(dim=-1)
        metrics.update(episode_metrics(segments, rewards, list(proto.non_tensor_batch["uid"])))
        metrics.update(credit_metrics(credit, advantage, memory_mask, response_mask))
        if self.mempo.run.credit_dump_dir:
            ids = tq.kv_batch_get(
                keys=batch.keys, partition_id=batch.partition_id, select_fields=["prompts", "responses"]
            )
            token_ids = [
                (prompt.tolist(), response.tolist())
                for prompt, response in zip(ids["prompts"].unbind(), ids["responses"].unbind(), strict=True)
            ]
            dump_credit(
                Path(self.mempo.run.credit_dump_dir) / f"credit_step{self.global_steps}.jsonl",
                batch.keys, rows.sessions, segments, credit, advantage.memory, advantage.tokens,
                rows.response_lengths, rewards, token_ids,
            )  # fmt: skip

        # 5. write back, as verl's _compute_advantage does
        output = {
            field: response_to_nested(proto.batch[field], rows.nested_response_mask)
            for field in ["advantages", "returns", *extra_fields]
        }
        return tq.kv_batch_put(
            keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(output, batch_size=len(batch))
        )
