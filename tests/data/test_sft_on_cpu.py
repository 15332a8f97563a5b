"""SFT rows for the cold start (mempo_verl/data/sft.py): verl's own MultiTurnSFTDataset tokenizes every row to exactly
the ids the agent loop sent and generated; user JSONL checked; the CLI. Eval traces: test_sft_traces_on_cpu.py."""

import asyncio
import json

import pandas as pd
import pytest
from transformers import AutoTokenizer

from mempo_verl.data.sft import ScriptedTurns, agent_config, jsonl_rows, oracle_rows, write_sft
from mempo_verl.envs.synthetic import make_synthetic_rows, min_turns, oracle_turns
from mempo_verl.eval.loop import agent_kwargs, make_agent_loop, sampling_params
from mempo_verl.testing.sft import verl_sft_dataset
from mempo_verl.tiny import tiny_world_model_dir

OVERRIDES = {
    "mempo.env.name": "synthetic",
    "mempo.env.kwargs.prompt": "brief",
    "mempo.agent.max_turns": 6,
    "mempo.context.memory_token_budget": 12,  # short enough to cut some oracle memories: rows show the cut
    "actor_rollout_ref.rollout.prompt_length": 1024,
    "actor_rollout_ref.rollout.response_length": 96,
}


@pytest.fixture(scope="module")
def world(model_cache):
    path = tiny_world_model_dir(model_cache)
    return str(path), AutoTokenizer.from_pretrained(path)


def test_oracle_rows_tokenize_to_the_agent_loops_ids(world, tmp_path):
    model_path, tokenizer = world
    config = agent_config(model_path, OVERRIDES)
    env_rows = make_synthetic_rows(3, 1, 1, seed=2, split="t") + make_synthetic_rows(3, 2, 1, seed=2, split="t")
    rows = oracle_rows(env_rows, config, tokenizer)
    assert len(rows) == sum(min_turns(r["extra_info"]["num_objectives"], 1) for r in env_rows)  # 3 x 2 + 3 x 3
    dataset = verl_sft_dataset(write_sft(rows, tmp_path / "sft.parquet"), tokenizer)
    newline = tokenizer.encode("\n", add_special_tokens=False)

    # the reference: the same episodes through the agent loop, built here as verl builds it
    async def loop_outputs(row, index):
        loop = make_agent_loop(config, ScriptedTurns(tokenizer, oracle_turns(row)), tokenizer, "qwen2")
        return await loop.run(sampling_params(config), **agent_kwargs(row, uid=f"ref-{index}"))

    outputs = [o for i, row in enumerate(env_rows) for o in asyncio.run(loop_outputs(row, i))]
    assert len(outputs) == len(rows) == len(dataset)
    truncated = 0
    for output, row, item in zip(outputs, rows, dataset, strict=True):
        ids, mask = item["input_ids"].tolist(), item["loss_mask"].tolist()
        # prompt = the ids the loop sent; the loss covers the generated ids (eos included) and the template's "\n"
        expected = list(output.prompt_ids) + list(output.response_ids) + newline
        assert ids == expected
        assert mask == [0] * len(output.prompt_ids) + [1] * (len(output.response_ids) + len(newline))
        assert row["messages"][-1]["content"] == tokenizer.decode(output.response_ids, skip_special_tokens=True)
        truncated += output.extra_fields["mempo"]["turns"][0]["memory_truncated"]
    assert truncated > 0  # some contexts show a memory cut to its budget, as the loop showed it


def test_user_jsonl_rows_are_checked(tmp_path):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<answer>a</answer>"}]}
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "tools": [{"type": "function"}]}) + "\n")
    rows = jsonl_rows(path)
    assert [r["turn"] for r in rows] == [1, 1] and rows[1]["tools"] == [{"type": "function"}]
    for bad, message in [
        ("not json", "not JSON"),
        (json.dumps({"messages": []}), "non-empty list"),
        (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "non-empty list"),
        (json.dumps({"messages": [{"role": "user", "content": "q"}]}), "last message must be the assistant"),
    ]:
        path.write_text(json.dumps(good) + "\n" + bad + "\n")
        # the error names the file and line of the bad row (line 2; line 1 is fine)
        with pytest.raises(ValueError, match=f"rows.jsonl:2: .*{message}"):
            jsonl_rows(path)


def test_cli_writes_oracle_rows(world, tmp_path, capsys):
    from mempo_verl.data.cli import main

    model_path, _ = world
    out = tmp_path / "sft.parquet"
    args = ["sft", "--source", "oracle", "--model", model_path, "--episodes", "2", "--objectives", "1,2", "--out"]
    assert main([*args, str(out)]) == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 2 * 2 + 2 * 3 and set(frame["source"]) == {"oracle"}
    assert "oracle: 10 rows from 4 episodes" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs --traces"):
        main(["sft", "--source", "traces", "--out", str(out)])
    with pytest.raises(ValueError, match="below the 3 turns"):
        main([*args, str(out), "--max-turns", "2"])
    # --set: a recipe key of the contexts (the tiny world's recipe turns the turns-left hint off)
    assert "Turns left:" in frame["messages"][0][1]["content"]
    assert main([*args, str(out), "--set", "mempo.context.turns_left_hint=false"]) == 0
    assert not any("Turns left:" in m["content"] for row in pd.read_parquet(out)["messages"] for m in row)
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        main([*args, str(out), "--set", "turns_left_hint"])
