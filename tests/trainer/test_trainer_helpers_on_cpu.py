"""The MemPO trainer's pure pieces: rows -> memory-credit inputs, `<mem>` token mask, scoring rows, metrics,
prompt-level mini-batch sizes.

The trainer step itself (TransferQueue, the actor's compute_log_prob) runs for real in tests/e2e.
"""

import json

import pytest
import torch

from mempo_verl import agent_loop
from mempo_verl.config import MemPOConfig
from mempo_verl.memory_credit import (
    MemoryCredit,
    build_scoring_sequence,
    memory_scoring_messages,
    question_scoring_messages,
)
from mempo_verl.metrics import credit_metrics, episode_metrics
from mempo_verl.rollout_credit import segment_turns
from mempo_verl.segments import EpisodeSummary, Segment, TurnRecord
from mempo_verl.trainer import (
    MemPOTrainer,
    dump_credit,
    memory_token_mask,
    prompt_mini_batches,
    rows_per_mini_batch,
    scoring_row,
)


def _turn(index: int, memory: str | None = "m", mem_span=(0, 3), **kw) -> TurnRecord:
    values = dict(
        turn_index=index,
        text=f"<mem>{memory}</mem>" if memory else "no tags",
        observation=f"o{index}",
        observation_ok=True,
        observation_error=None,
        observation_metrics={},
        action="tool_call",
        tool_call={"name": "search", "arguments": {"query": "q"}},
        answer=None,
        memory=memory,
        memory_in_context=memory,
        memory_truncated=False,
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


def test_segment_turns_skip_padding_and_full_policy_rows():
    segments = [
        _segment(0, [_turn(0)]),
        _segment(1, [_turn(1, memory=None)], is_last=True),
        None,  # padding row
        _segment(0, [_turn(0), _turn(1)], is_last=True, policy="full"),
    ]
    rows = segment_turns(segments, ["s0", "s0", "pad", "s1"])
    assert rows[0].memory == "m" and rows[0].session == "s0" and rows[0].observation == "o0"
    assert rows[1].memory is None  # no <mem>: no R^M, A^T only
    assert rows[2] is None and rows[3] is None  # padding; a whole-history row has no single <mem> to credit


def test_memory_credit_scores_the_memory_later_turns_see():
    # a memory over mempo.context.memory_token_budget is cut where later contexts show it: R^M scores the cut text
    written = "Aldmark capital Velmora founded 1203 by the Tavren Guild"
    shown = "Aldmark capital Velmora"  # what the agent loop recorded as shown to later turns
    turn = _turn(0, memory=written, memory_in_context=shown, memory_truncated=True)
    (row,) = segment_turns([_segment(0, [turn])], ["s0"])
    assert row.memory == shown
    assert row.text == f"<mem>{written}</mem>"  # s_<t of later turns keeps the turn as written (full history)


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
    trainer.mempo = MemPOConfig.from_config({"credit": {"baseline": "question"}})
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
    metrics = episode_metrics(segments, session_rewards=torch.tensor([1.0, 1.0, 0.0]))
    assert metrics["mempo/reward_T/mean"] == 1.0  # one session, R^T = 1 (read on its last row)
    assert metrics["mempo/turns/mean"] == 2 and metrics["mempo/tokens_peak/mean"] == 120
    assert metrics["mempo/tokens_total/mean"] == 212  # TT = 2 turns x 106 tokens
    assert metrics["mempo/termination/answer"] == 1.0
    assert metrics["mempo/memory_tokens/mean"] == 3  # mem span (0, 3) in both turns

    credit = _credit([0.2, -0.2, float("nan")], [0.5, 0.3, float("nan")], [0.3, 0.5, float("nan")], [True, True, False])
    advantages = torch.tensor([[2.0, 2.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    memory_mask = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 0]])
    response_mask = torch.tensor([[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    group_std, group_floor = torch.tensor([0.28, 0.001]), torch.tensor([0.01, 0.005])  # group 2 is under its floor
    out = credit_metrics(
        credit, torch.tensor([0.7, -0.7, 0.0]), advantages, memory_mask, response_mask, group_std, group_floor
    )
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
        torch.ones(2, 4), [3, 1], torch.tensor([1.0, 0.0]),
    )  # fmt: skip
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["key"] == "u_0_0" and record["advantages"] == [1.0, 1.0, 1.0]
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
