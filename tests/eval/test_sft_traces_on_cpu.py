"""SFT rows from mempo-eval traces (mempo_verl/data/sft.py ``trace_rows``): correct trajectories only, each row's
context rendering to exactly the text the evaluated model was sent."""

from mempo_verl.data.sft import trace_rows, write_sft
from mempo_verl.eval import BackendConfig, run_eval
from mempo_verl.eval.backends import OpenAICompletionsBackend
from mempo_verl.testing.sft import verl_sft_dataset


def test_traces_keep_correct_trajectories_only(make_config, scripted_backend, tmp_path):
    # the scripted agent answers odd-numbered objectives right: every k = 1 episode is correct, no k = 2 one is
    result = run_eval(make_config(objectives=(1, 2), max_examples=3, methods=("memory",)), backend=scripted_backend)
    assert result.errors == 0
    rows, counts = trace_rows(tmp_path / "run" / "traces.jsonl")
    assert counts == {"episodes": 6, "kept": 3, "rows": 6}  # 3 correct episodes x 2 turns
    tokenizer = scripted_backend.tokenizer
    kept = {r.key: r for r in result.records if r.objectives == 1}
    assert {row["episode"] for row in rows} == set(kept)
    for row in rows:
        record = kept[row["episode"]]
        turn = record.turns[row["turn"]]
        # the row's context renders to exactly the text the model was sent
        context = tokenizer.apply_chat_template(
            row["messages"][:-1], tools=row["tools"], tokenize=False, add_generation_prompt=True
        )
        assert context == turn["context"] and row["messages"][-1]["content"] == turn["output"]
    dataset = verl_sft_dataset(write_sft(rows, tmp_path / "sft.parquet"), tokenizer)
    assert len(dataset) == 6 and all(int(item["loss_mask"].sum()) > 0 for item in dataset)


def test_traces_of_another_method_give_nothing(make_config, scripted_backend, tmp_path):
    run_eval(make_config(objectives=(1,), max_examples=2, methods=("full",)), backend=scripted_backend)
    rows, counts = trace_rows(tmp_path / "run" / "traces.jsonl", method="memory")
    assert rows == [] and counts == {"episodes": 0, "kept": 0, "rows": 0}


def test_traces_of_a_teacher_served_over_http(completions_server, make_config, scripted_backend, tmp_path):
    """The paper's route: a teacher behind an OpenAI-compatible URL (a real server on 127.0.0.1, answering with the
    scripted agent: right at k = 1, wrong at k = 2), mempo-eval's openai backend, then the correct-only filter."""
    completions_server.local = scripted_backend
    tokenizer = scripted_backend.tokenizer
    backend = OpenAICompletionsBackend(
        BackendConfig(kind="openai", model="teacher", url=completions_server.url), tokenizer, "qwen2"
    )
    result = run_eval(make_config(objectives=(1, 2), max_examples=2, methods=("memory",)), backend=backend)
    assert result.errors == 0 and len(completions_server.requests) == 8  # 4 episodes x (search, answer)
    rows, counts = trace_rows(tmp_path / "run")
    assert counts == {"episodes": 4, "kept": 2, "rows": 4}
    assert {row["episode"] for row in rows} == {r.key for r in result.records if r.objectives == 1}
    assert len(verl_sft_dataset(write_sft(rows, tmp_path / "sft.parquet"), tokenizer)) == 4
