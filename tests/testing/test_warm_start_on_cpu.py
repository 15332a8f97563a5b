"""The format warm start: the tiny model fine-tuned to write MemPO turns, checked through the real agent loop.

The model is built once per session into the session's model cache (`format_tuned_path`, tests/conftest.py; the
build is timed and printed, and the MemPO end-to-end test reuses it), then episodes are
sampled at temperature 1.0 through the real `MemPOAgentLoop` (built as verl's AgentLoopWorker builds it, over
verl's composed ppo_trainer config, with the `search_qa` environment and the tiny CPU recipe's turn settings),
served by the in-process `PolicyServer` in sampling mode. Run with `-s` to see the measured rates.
"""

import asyncio
import json
from collections import Counter
from dataclasses import replace

import pytest
from omegaconf import OmegaConf

from mempo_verl.eval.loop import NO_SESSION_SCORING, agent_kwargs, make_agent_loop, ppo_trainer_config
from mempo_verl.protocol import parse_turn
from mempo_verl.segments import Segment
from mempo_verl.testing.policy_server import PolicyServer
from mempo_verl.testing.warm_start import (
    ScriptedEpisodes,
    WarmStartConfig,
    format_tuned_model_dir,
    main,
    scripted_turns,
    training_rows,
)

REWARD_FUNCTION = {"custom_reward_function": {"path": "pkg://mempo_verl.rewards", "name": "compute_score"}}
NUM_EPISODES = 20
"""Sampled sessions of the success criterion (one per test-split row, ≈ 1 s each)."""
MIN_VALID_FIRST_TURNS = 0.85
"""The success criterion: share of sessions whose first turn parses valid at temperature 1.0 (measured: 98 % of
136 first turns on the test split)."""


@pytest.fixture(scope="session")
def tuned(format_tuned_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(format_tuned_path).eval()
    return model, AutoTokenizer.from_pretrained(format_tuned_path)


@pytest.fixture(scope="module")
def loop_config(tiny_model_path):
    """verl's real ppo_trainer config with the tiny CPU recipe's turn settings and the default `search_qa`; no
    session-end scoring (the policy server serves no prompt log-probs)."""
    rollout = {"prompt_length": 1024, "response_length": 96, "temperature": 1.0}
    mempo = {"agent": {"max_turns": 4}, "context": {"memory_token_budget": 64}, "reward": {"source": "environment"}}
    return OmegaConf.merge(
        ppo_trainer_config(),
        NO_SESSION_SCORING,
        {"actor_rollout_ref": {"model": {"path": str(tiny_model_path)}, "rollout": rollout}, "reward": REWARD_FUNCTION},
        {"mempo": mempo},
    )


def run_sessions(config, server, tokenizer, rows, temperature):
    """One session per parquet row through the real MemPOAgentLoop; returns each session's outputs and segments."""
    params = dict(temperature=temperature, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=False)

    async def go():
        sessions = []
        for index, row in enumerate(rows):
            loop = make_agent_loop(config, server, tokenizer, hf_model_type="qwen2")
            outputs = await loop.run(params, **agent_kwargs(row, uid=f"p{index}"))
            sessions.append((outputs, [Segment.from_extra_fields(o.extra_fields) for o in outputs]))
        return sessions

    return asyncio.run(go())


# ------------------------------------------------------------------------------------------------ fast checks


def test_scripted_turns_are_valid_turns_of_the_format():
    config = WarmStartConfig(guess='The "Ledger"')
    first, second = scripted_turns("Ada Harrowby", config)
    call, answer = parse_turn(first), parse_turn(second)
    assert call.is_valid and call.action == "tool_call" and call.mem == config.first_memory
    # the query is the guess, quotes and all (JSON-escaped by render_turn, parsed back)
    assert call.tool_call.name == "search" and call.tool_call.arguments == {"query": 'The "Ledger"'}
    assert answer.is_valid and (answer.action, answer.answer, answer.mem) == ("answer", "Ada Harrowby", "Searched.")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("batch_size", 3),
        ("gold_share", 1.5),
        ("lr", 0.0),
        ("train_temperature", float("nan")),
        ("max_turns_choices", (1,)),
        ("num_threads", True),
    ],  # fmt: skip
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"WarmStartConfig.{field}"):
        WarmStartConfig(**{field: value})


def test_fingerprint_follows_every_setting():
    base = WarmStartConfig()
    assert base.fingerprint() == WarmStartConfig().fingerprint()
    changed = [replace(base, steps=7), replace(base, seed=1), replace(base, gold_share=0.2), replace(base, lr=2e-3)]
    assert len({base.fingerprint(), *(c.fingerprint() for c in changed)}) == 5


def test_training_contexts_are_what_the_agent_loop_sends(loop_config, tokenizer):
    """Replay one scripted episode through the real loop: the server sees exactly the training prompts."""
    row = training_rows()[0]
    episodes = ScriptedEpisodes(tokenizer, WarmStartConfig())
    examples = asyncio.run(episodes.examples(row, answer="Grey Sea", max_turns=4))
    server = PolicyServer(None, tokenizer, script=[list(ex.response_ids) for ex in examples])
    [(outputs, segments)] = run_sessions(loop_config, server, tokenizer, [row], temperature=1.0)
    assert [list(r.prompt_ids) for r in server.requests] == [list(ex.prompt_ids) for ex in examples]
    assert [o.response_ids for o in outputs] == [list(ex.response_ids) for ex in examples]
    last = segments[-1]
    assert (last.termination, last.final_answer, last.format_valid) == ("answer", "Grey Sea", True)
    assert "<information>Doc 1(Title:" in tokenizer.decode(examples[1].prompt_ids)


# ------------------------------------------------------------------------------------------------ the build


def test_build_is_cached_recorded_and_printed(format_tuned_path, model_cache, capsys):
    weights = format_tuned_path / "model.safetensors"
    mtime = weights.stat().st_mtime
    assert format_tuned_model_dir(model_cache) == format_tuned_path and weights.stat().st_mtime == mtime  # no rebuild
    assert format_tuned_path.parent == model_cache
    record = json.loads((format_tuned_path / "warm_start.json").read_text())
    assert record["num_examples"] == 2 * len(training_rows())
    assert record["final_loss"] < 0.2 * record["first_loss"]  # ≈ 12 (uniform over 151,665 tokens) -> ≈ 1
    main(["--cache-dir", str(model_cache)])  # the CLI prints the same folder, without rebuilding
    assert capsys.readouterr().out.strip() == str(format_tuned_path)


def test_sampled_sessions_write_the_turn_format(tuned, loop_config):
    """The success criterion: ≥ 85 % valid first turns at temperature 1.0, with `<mem>` spans and multi-turn
    sessions, through the real agent loop and the real `search_qa` environment."""
    from mempo_verl.data.builder import BuildConfig, build_rows, load_pools

    model, tokenizer = tuned
    rows = build_rows(load_pools("sample"), BuildConfig(objectives=1))["test"][:NUM_EPISODES]
    server = PolicyServer(model, tokenizer, mode="sampling", seed=0)
    sessions = run_sessions(loop_config, server, tokenizer, rows, 1.0)
    first_turns = [segments[0].turns[0] for _, segments in sessions]
    valid = [t for t in first_turns if not t.format_errors]
    multi_turn = [s for s in sessions if len(s[0]) > 1]
    terminations = Counter(segments[-1].termination for _, segments in sessions)
    rewards = [outputs[-1].reward_score for outputs, _ in sessions]
    print(
        f"\n{len(sessions)} sessions at T=1.0: first turn valid {len(valid) / len(sessions):.0%}, "
        f"multi-turn {len(multi_turn) / len(sessions):.0%}, terminations {dict(terminations)}, "
        f"mean reward {sum(rewards) / len(rewards):.2f}"
    )
    assert len(valid) / len(sessions) >= MIN_VALID_FIRST_TURNS
    # every valid first turn has its memory span in the response ids (what A^M trains)
    assert all(t.mem_span is not None and t.memory for t in valid)
    assert all(t.action == "tool_call" and t.observation_ok for t in valid)
    assert len(multi_turn) >= len(sessions) // 2 and all(len(segs) == len(outs) for outs, segs in sessions)
    # the answers vary: the guess on some sessions, made-up text on others (item 2 of the module docstring)
    answers = Counter(segments[-1].final_answer for _, segments in sessions if segments[-1].termination == "answer")
    print(f"answers: {answers.most_common(5)}")
    assert 0 < answers[WarmStartConfig().guess] < sum(answers.values())
