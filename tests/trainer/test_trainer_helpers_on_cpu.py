"""The MemPO trainer's pure pieces: rows -> memory-credit inputs, `<mem>` token mask, scoring rows, metrics,
prompt-level mini-batch sizes.

The trainer step itself (TransferQueue, the actor's compute_log_prob) runs for real in tests/e2e.
"""

import json

import pytest
import torch
from tensordict import TensorDict

from mempo_verl import agent_loop
from mempo_verl.advantage import MemPOAdvantage
from mempo_verl.config import MemPOConfig
from mempo_verl.memory_credit import (
    MemoryCredit,
    build_scoring_sequence,
    history_scoring_messages,
    memory_scoring_messages,
    plan_memory_credit,
    question_scoring_messages,
)
from mempo_verl.metrics import credit_metrics, episode_metrics
from mempo_verl.protocol import ToolCall
from mempo_verl.segments import EpisodeSummary, Segment
from mempo_verl.trainer import (
    MemPOTrainer,
    credited_turn_indices,
    dump_credit,
    memory_token_mask,
    prompt_mini_batches,
    rows_per_mini_batch,
    scoring_row,
)
from mempo_verl.turns import TurnRecord


def _turn(index: int, memory: str | None = "m", mem_span=(0, 3), **kw) -> TurnRecord:
    values = dict(
        turn_index=index,
        text=f"<mem>{memory}</mem>" if memory else "no tags",
        memory=memory,
        memory_in_context=memory,
        memory_truncated=False,
        think=None,
        action="tool_call",
        tool_call=ToolCall("search", {"query": "q"}),
        answer=None,
        observation=f"o{index}",
        observation_ok=True,
        observation_error=None,
        observation_metrics={},
        mem_span=mem_span if memory else None,
        response_span=(0, 6),
        prompt_tokens=100,
        completion_tokens=6,
        format_errors=(),
    )
    values.update(kw)
    return TurnRecord(**values)


SEARCH_SCHEMA = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


def _segment(index: int, turns, is_last=False, policy="memory", peak=106, tool_schemas=()) -> Segment:
    last = {}
    if is_last:
        episode = EpisodeSummary(
            num_turns=index + 1, total_tokens=106 * (index + 1), peak_tokens=peak, env_failures=0, memory_truncations=0
        )
        last = dict(termination="answer", final_answer="Paris", format_valid=True, episode=episode)
    return Segment(
        uid="u",
        session_id=0,
        segment_index=index,
        policy=policy,
        layout="sequence" if policy == "full" else "per_turn",
        turns=tuple(turns),
        task_prompt="Task.",
        questions=("Q?",),
        question_text="Q?",
        gold_answer="Paris",
        reward_mode="all_em",
        is_last=is_last,
        tool_schemas=tuple(tool_schemas),
        **last,
    )


def test_memory_credit_skips_padding_sequence_rows_and_rows_without_memory(tokenizer):
    trainer = object.__new__(MemPOTrainer)  # only the memory-credit step: no workers, no TransferQueue
    trainer.mempo = MemPOConfig.from_config({"credit": {"baseline": "question", "scorer": "actor"}})
    trainer.tokenizer, trainer.scoring_window = tokenizer, None
    trainer._answer_probabilities = lambda sequences, partition_id: torch.full((len(sequences),), 0.5)
    segments = [
        _segment(0, [_turn(0)]),
        _segment(1, [_turn(1, memory=None)], is_last=True),  # no <mem>: no R^M, A^T only
        None,  # padding row
        _segment(0, [_turn(0), _turn(1)], is_last=True, policy="full"),  # a whole-history row: no single <mem>
    ]
    metrics = {}
    credit = trainer._memory_credit(segments, [("u", 0), ("u", 0), ("pad", 0), ("u", 1)], "train", metrics)
    assert credit.has_memory.tolist() == [True, False, False, False]
    assert metrics["mempo/memory_credit/segments"] == 1


def test_memory_credit_reads_tool_schemas_from_the_segments_not_the_environment(monkeypatch, tokenizer):
    # building the environment in the trainer would build its retrieval index there just to read the schemas
    def no_environment(*args, **kwargs):
        raise AssertionError("the trainer built the environment")

    monkeypatch.setattr(agent_loop, "make_env", no_environment)
    monkeypatch.setattr(agent_loop, "_ENVIRONMENTS", {})
    scored = []

    def answer_probabilities(sequences, partition_id):
        scored.extend(sequences)
        return torch.full((len(sequences),), 0.5)

    trainer = object.__new__(MemPOTrainer)  # only the memory-credit step: no workers, no TransferQueue
    trainer.mempo = MemPOConfig.from_config({"credit": {"baseline": "question", "scorer": "actor"}})  # scored here
    trainer.tokenizer = tokenizer
    trainer.scoring_window = None
    trainer._answer_probabilities = answer_probabilities
    segment = _segment(0, [_turn(0, memory="Paris")], tool_schemas=[SEARCH_SCHEMA])
    credit = trainer._memory_credit([segment], [("u", 0)], "train", metrics={})
    assert credit.has_memory.tolist() == [True]
    # the scoring contexts open as the rollout's did: the chat template received the segment's tool schemas
    expected = [
        build_scoring_sequence(
            tokenizer, memory_scoring_messages("Task.", "Q?", "Paris"), "Paris", tools=[SEARCH_SCHEMA]
        ),
        build_scoring_sequence(tokenizer, question_scoring_messages("Task.", "Q?"), "Paris", tools=[SEARCH_SCHEMA]),
    ]
    assert scored == expected
    assert scored[0] != build_scoring_sequence(tokenizer, memory_scoring_messages("Task.", "Q?", "Paris"), "Paris")


def test_memory_token_mask_marks_the_mem_span_within_the_response():
    segments = [_segment(0, [_turn(0, mem_span=(1, 4))]), _segment(1, [_turn(1, memory=None)]), None]
    mask = memory_token_mask(segments, response_lengths=[6, 6, 1], width=6)
    assert mask.tolist() == [[0, 1, 1, 1, 0, 0], [0] * 6, [0] * 6]
    # a span past the stored response (cut at response_length) is clipped, never out of bounds
    assert memory_token_mask([_segment(0, [_turn(0, mem_span=(4, 9))])], [5], 6).tolist() == [[0, 0, 0, 0, 1, 0]]
    # a `sequence` row (full policy) gets A^T only: no <mem> token of it is marked
    whole = _segment(0, [_turn(0), _turn(1)], is_last=True, policy="full")
    assert memory_token_mask([whole], [6], 6).tolist() == [[0] * 6]


def test_scoring_row_has_the_fields_verl_actor_reads(tokenizer):
    sequence = build_scoring_sequence(tokenizer, question_scoring_messages("Task.", "Q?"), "Paris")
    row = scoring_row(sequence)
    response_length = len(sequence.input_ids) - sequence.prompt_length
    assert row["input_ids"].tolist() == list(sequence.input_ids)
    assert torch.equal(torch.cat([row["prompts"], row["responses"]]), row["input_ids"])
    assert row["response_mask"].shape == row["loss_mask"].shape == (response_length,)
    assert row["position_ids"].tolist() == list(range(len(sequence.input_ids)))


def test_noise_scale_is_the_size_of_two_independently_rounded_probabilities():
    credit = _credit([0.1, float("nan")], [0.4, float("nan")], [0.3, float("nan")], [True, False])
    # sqrt(0.4² + 0.3²) = 0.5
    assert credit.noise_scale[0].item() == pytest.approx(0.5)


def _credit(rewards, p_mem, p_base, has):
    return MemoryCredit(torch.tensor(rewards), torch.tensor(p_mem), torch.tensor(p_base), torch.tensor(has))


def test_episode_and_credit_metrics_by_hand():
    segments = [_segment(0, [_turn(0)]), _segment(1, [_turn(1)], is_last=True, peak=120), None]
    metrics = episode_metrics(segments, session_rewards=torch.tensor([1.0, 1.0, 0.0]), prompts=["p", "p", "pad"])
    assert metrics["mempo/reward_T/mean"] == 1.0  # one session, R^T = 1 (read on its last row)
    assert metrics["mempo/reward_T/mixed_prompts"] == 0.0  # one prompt, one session; the padding row is no prompt
    assert metrics["mempo/turns/mean"] == 2 and metrics["mempo/tokens_peak/mean"] == 120
    assert metrics["mempo/tokens_total/mean"] == 212  # TT = 2 turns x 106 tokens
    assert metrics["mempo/termination/answer"] == 1.0
    assert metrics["mempo/memory_tokens/mean"] == 3  # mem span (0, 3) in both turns

    credit = _credit([0.2, -0.2, float("nan")], [0.5, 0.3, float("nan")], [0.3, 0.5, float("nan")], [True, True, False])
    advantages = torch.tensor([[2.0, 2.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    memory_mask = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 0]])
    response_mask = torch.tensor([[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    group_std, group_floor = torch.tensor([0.28, 0.001]), torch.tensor([0.01, 0.005])  # group 2 is under its floor
    advantage = MemPOAdvantage(
        tokens=advantages,
        trajectory=torch.zeros(3),
        memory=torch.tensor([0.7, 0.0, 0.0]),
        memory_gated=torch.tensor([False, True, False]),  # row 1's A^M (-0.7) gated to 0
        memory_group_std=group_std,
        memory_group_floor=group_floor,
    )
    out = credit_metrics(credit, advantage, memory_mask, response_mask)
    assert out["mempo/adv_M/gated"] == 0.5  # 1 of the 2 rows with R^M
    assert out["mempo/adv_M/mean"] == pytest.approx(0.35)  # (0.7 + 0) / 2, over rows with R^M
    assert out["mempo/reward_M/group_std/mean"] == pytest.approx(0.1405)  # (0.28 + 0.001) / 2
    assert out["mempo/reward_M/group_std/min"] == pytest.approx(0.001)
    assert out["mempo/reward_M/group_std/max"] == pytest.approx(0.28)
    assert out["mempo/adv_M/noise_floor/mean"] == pytest.approx(0.0075)  # (0.01 + 0.005) / 2
    assert out["mempo/adv_M/floored_groups"] == 0.5  # 1 of 2 groups under its σ_min
    assert out["mempo/reward_M/mean"] == pytest.approx(0.0)
    assert out["mempo/p_ans_mem/mean"] == pytest.approx(0.4) and out["mempo/epsilon/mean"] == pytest.approx(0.4)
    assert out["mempo/memory_credit/coverage"] == pytest.approx(2 / 3)
    assert out["mempo/adv/memory_tokens/mean"] == pytest.approx(1.0)  # (2 + 2 + 0 + 0) / 4
    assert out["mempo/adv/other_tokens/mean"] == pytest.approx(1.0)  # (1 + 1) / 2


def test_dump_credit_writes_one_line_per_real_row(tmp_path):
    segments = [_segment(0, [_turn(0)]), None]
    credit = _credit([0.25, float("nan")], [0.5, float("nan")], [0.25, float("nan")], [True, False])
    path = tmp_path / "credit.jsonl"
    dump_credit(
        path, ["u_0_0", "pad_0_0"], [("u", 0), ("pad", 0)], segments, credit, torch.tensor([1.5, 0.0]),
        torch.ones(2, 4), [3, 1], torch.tensor([1.0, 0.0]), [([5, 6], [7, 8, 9]), ([5], [0])],
    )  # fmt: skip
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["key"] == "u_0_0" and record["advantages"] == [1.0, 1.0, 1.0]
    assert record["prompt_ids"] == [5, 6] and record["response_ids"] == [7, 8, 9]
    assert record["memory_reward"] == 0.25 and record["memory_advantage"] == 1.5 and record["mem_span"] == [0, 3]


def test_prompt_mini_batches_count_updates_per_step():
    assert prompt_mini_batches(128, 32) == 4  # the paper recipe: 4 updates per step, whatever the segment count
    assert prompt_mini_batches(2, 2) == 1
    with pytest.raises(ValueError, match=r"train_batch_size \(10\) to be a multiple of .*ppo_mini_batch_size \(4\)"):
        prompt_mini_batches(10, 4)


def test_rows_per_mini_batch_splits_the_steps_rows_into_k():
    # 4 prompts × n=16 sessions × ~3 segments: 192 rows -> 4 updates of 48 rows (verl would make 3 of 64)
    assert rows_per_mini_batch(192, mini_batches=4, dp_size=8) == 48
    assert rows_per_mini_batch(14, mini_batches=1, dp_size=2) == 14
    with pytest.raises(ValueError, match="13 rows cannot form 1 mini-batches over 2 data-parallel ranks"):
        rows_per_mini_batch(13, mini_batches=1, dp_size=2)


def test_fixed_micro_batch_multiple_by_hand():
    from mempo_verl.trainer import fixed_micro_batch_multiple

    # dp 1, K 1, update micro 16, log-prob micros 16 and 16: 16 rows (80 rows pad to 80, 81 to 96)
    assert fixed_micro_batch_multiple(1, 1, 16, (16, 16)) == 16
    # dp 2, K 2, update micro 4 -> each rank's mini-batch share of 4: 2 x lcm(8, 6) = 48
    assert fixed_micro_batch_multiple(2, 2, 4, (6,)) == 48
    # no log-prob micro-batch sizes set: the update alone
    assert fixed_micro_batch_multiple(1, 3, 2, ()) == 6


# --- scorer: rollout start checks and the scoring window --------------------------------------------------------------


def _tiny_cpu(overrides=()):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    with initialize_config_dir(config_dir=str(recipes), version_base=None):
        return compose(config_name="tiny_cpu", overrides=list(overrides))


def test_rollout_scorer_needs_vllm_at_temperature_one():
    from mempo_verl.config import check_verl_config

    def check(overrides):
        config = _tiny_cpu(overrides)
        check_verl_config(MemPOConfig.from_config(config.mempo), config)

    check(["mempo.credit.scorer=rollout"])
    # vLLM's raw log-probs are of the untempered logits: at 0.7 they would score another policy than the actor's
    with pytest.raises(ValueError, match=r"scorer=rollout needs .*temperature=1\.0 \(got 0\.7\)"):
        check(["mempo.credit.scorer=rollout", "actor_rollout_ref.rollout.temperature=0.7"])
    with pytest.raises(ValueError, match=r"rollout\.name=vllm \(got 'sglang'\)"):
        check(["mempo.credit.scorer=rollout", "actor_rollout_ref.rollout.name=sglang"])
    check(["mempo.credit.scorer=rollout", "actor_rollout_ref.rollout.temperature=0.7", "mempo.credit.alpha=0"])
    # the server must force the answer and return the log-probs taken before the forcing (recipes/base sets both)
    with pytest.raises(ValueError, match=r"logprobs_mode=raw_logprobs \(got 'processed_logprobs'\)"):
        check(["mempo.credit.scorer=rollout", "actor_rollout_ref.rollout.logprobs_mode=processed_logprobs"])
    with pytest.raises(ValueError, match=r"to list 'mempo_verl.forced_tokens:ForcedTokens' \(got \[\]\)"):
        check(["mempo.credit.scorer=rollout", "actor_rollout_ref.rollout.engine_kwargs.vllm.logits_processors=[]"])
    check(["mempo.credit.scorer=actor", "actor_rollout_ref.rollout.logprobs_mode=processed_logprobs"])


def test_scoring_window_is_the_rollout_window_less_one_token():
    from mempo_verl.config import scoring_window

    def window(overrides, positions=2048):
        config = _tiny_cpu(overrides)
        return scoring_window(MemPOConfig.from_config(config.mempo), config, positions)

    assert window([]) == 2047  # max_model_len unset: verl serves max_position_embeddings; one token must be generated
    assert window(["actor_rollout_ref.rollout.max_model_len=1000"]) == 999
    dynamic = ["actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true",
               "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=512"]  # fmt: skip
    # the actor's engine asserts on sequences past its token budget
    assert window([*dynamic, "mempo.credit.scorer=actor"]) == 512
    assert window(dynamic) == 2047  # the default scorer, rollout: the server has no such budget
    assert window([*dynamic, "mempo.credit.max_scoring_tokens=300"]) == 300


def test_memory_credit_counts_eps_contexts_cut_to_the_window(tokenizer):
    trainer = object.__new__(MemPOTrainer)
    trainer.mempo = MemPOConfig.from_config({"credit": {"scorer": "actor"}})  # the plan is scored here, in the step
    trainer.tokenizer = tokenizer
    trainer._answer_probabilities = lambda sequences, partition_id: torch.full((len(sequences),), 0.5)
    long_turn = dict(observation="Doc " + "alpha " * 80)
    segments = [_segment(t, [_turn(t, memory=f"m{t}", **long_turn)]) for t in range(3)]
    metrics = {}
    trainer.scoring_window = None
    trainer._memory_credit(segments, [("u", 0)] * 3, "train", metrics)
    assert metrics["mempo/credit_eps_truncated"] == 0
    longest = metrics["mempo/memory_credit/scored_tokens"]
    one_turn = [segments[0].turns[0]]
    epsilon_1 = build_scoring_sequence(tokenizer, history_scoring_messages("Task.", "Q?", one_turn), "Paris")
    trainer.scoring_window = len(epsilon_1.input_ids)  # ε_1 (one long observation) fits, ε_2 (two) does not
    credit = trainer._memory_credit(segments, [("u", 0)] * 3, "train", metrics)
    assert metrics["mempo/credit_eps_truncated"] == 1 and metrics["mempo/memory_credit/too_long"] == 0
    assert credit.has_memory.tolist() == [True, True, True] and metrics["mempo/memory_credit/scored_tokens"] < longest


# --- the actor scoring path against an independent computation -------------------------------------------------------


class _FakeStore:
    """TransferQueue's kv calls the trainer makes, in memory: one TensorDict per put, fields added by the worker; a
    get returns per-row tensors as jagged nested tensors, as TransferQueue packs them (simple_storage_manager.py
    `_pack_field_values`) whether or not the rows have equal lengths."""

    def __init__(self):
        self.rows: dict[str, TensorDict] = {}
        self.cleared: list[str] = []

    def kv_batch_put(self, keys, partition_id, fields, tags=None):
        self.rows[tuple(keys)] = fields

    def kv_batch_get(self, keys, partition_id, select_fields):
        fields = self.rows[tuple(keys)]
        packed = {
            f: torch.nested.as_nested_tensor(list(fields[f].unbind()), layout=torch.jagged) for f in select_fields
        }
        return TensorDict(packed, batch_size=len(keys))

    def kv_clear(self, keys, partition_id):
        self.cleared.extend(keys)


class _FakeActor:
    """`compute_log_prob` of verl's engine on CPU, written out: per row, log_probs over the whole sequence in the
    engine's layout (position i holds log π(ids[i+1] | ids[≤i]), `padding.response_from_nested` shifts it back)."""

    def __init__(self, model, store, dp_size):
        self.model, self.store, self.dp_size = model, store, dp_size
        self.row_counts: list[int] = []

    def _query_dispatch_info(self, role):
        return list(range(self.dp_size))

    @torch.no_grad()
    def compute_log_prob(self, meta):
        fields = self.store.rows[tuple(meta.keys)]
        rows = []
        for ids in fields["input_ids"].unbind():
            logits = self.model(input_ids=ids[None]).logits[0] / meta.extra_info["temperature"]  # (L, V)
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            shifted = logprobs[:-1].gather(-1, ids[1:, None]).squeeze(-1)  # (L - 1,) next-token log-probs
            rows.append(torch.cat([shifted, torch.zeros(1)]))  # the last position predicts nothing
        self.row_counts.append(len(rows))
        fields["log_probs"] = torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def test_actor_scoring_path_matches_a_loop_over_the_gold_tokens(monkeypatch, tokenizer, tiny_model):
    from mempo_verl import trainer as trainer_module
    from mempo_verl.testing.scoring import peaked, reference_probability

    model = peaked(tiny_model)  # peaked distributions: a gold mask one token off moves ln P by O(1)
    store = _FakeStore()
    monkeypatch.setattr(trainer_module, "tq", store)
    trainer = object.__new__(MemPOTrainer)
    trainer.config = _tiny_cpu()  # log-prob micro-batches of 8: 2 dp ranks x 8 = rows padded to a multiple of 16
    trainer.mempo = MemPOConfig.from_config(trainer.config.mempo)
    trainer.actor_rollout_wg = _FakeActor(model, store, dp_size=2)
    texts = ["<mem>need capital</mem><think>s</think><tool_call>{}</tool_call>", "<mem>France</mem><think>s</think>"]
    segments = [_segment(t, [_turn(t, memory=m, text=texts[t])]) for t, m in enumerate(["need capital", "France"])]
    plan = plan_memory_credit(segments, [("u", 0)] * 2, tokenizer, "prefix")
    assert len(plan.sequences) == 4  # two memory contexts, ε_1 = P[ans | q], ε_2 over turn 0
    probabilities = trainer._answer_probabilities(plan.sequences, "train")
    expected = torch.tensor([reference_probability(model, s) for s in plan.sequences], dtype=torch.float64)
    # relative: |ln P - ln P_ref| <= 1e-4 (the peaked model's P are far below 1e-4, an absolute bound would be empty)
    torch.testing.assert_close(probabilities.double().log(), expected.log(), atol=1e-4, rtol=0)
    # the worker saw 16 rows (4 sequences + 12 copies of the last), every scoring key was cleared
    assert trainer.actor_rollout_wg.row_counts == [16] and len(store.cleared) == 16


def test_mixed_prompts_count_real_sessions_only():
    # prompt a: sessions with R^T 1 and 0 (mixed); prompt b: 0 and 0; a padding row with its own uid and R^T 1
    segments = [_segment(0, [_turn(0)], is_last=True) for _ in range(4)] + [None]
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0])
    metrics = episode_metrics(segments, session_rewards=rewards, prompts=["a", "a", "b", "b", "pad"])
    assert metrics["mempo/reward_T/mixed_prompts"] == 0.5  # 1 of the 2 real prompts


def test_env_failures_are_counted_by_kind_per_session():
    refused = dict(observation_ok=False, observation_error="retriever_unavailable")
    unknown = dict(observation_ok=False, observation_error="not_found")
    # session 0: two turns refused by a dead retriever; session 1: one unknown name, then a good lookup
    sessions = [
        [_segment(0, [_turn(0, **refused)]), _segment(1, [_turn(1, **refused)], is_last=True)],
        [_segment(0, [_turn(0, **unknown)]), _segment(1, [_turn(1)], is_last=True)],
    ]
    segments = [segment for session in sessions for segment in session] + [None]  # a padding row counts nothing
    metrics = episode_metrics(segments, session_rewards=torch.zeros(5), prompts=["p"] * 5)
    assert metrics["mempo/env_failures/retriever_unavailable"] == 1.0  # 2 refused calls over 2 sessions
    assert metrics["mempo/env_failures/not_found"] == 0.5  # 1 over 2
    assert not any(key.startswith("mempo/env_failures/") and key.endswith("None") for key in metrics)


def test_credited_turn_indices_read_the_turn_record():
    # a row's segment_index and its turn's turn_index agree under per_turn; the record is what the credit plan reads
    rows = [_segment(0, [_turn(3)]), None, _segment(0, [_turn(0), _turn(1)], is_last=True, policy="full")]
    assert credited_turn_indices(rows) == [3, 0, 0]  # turn 3's record; padding and a sequence row: 0
