"""The closing summary of a run (mempo_verl/run_summary.py), from a metrics file as verl's file logger writes it."""

import json

from mempo_verl.run_summary import read_metrics, summary_text


def write_metrics(path, records):
    path.write_text("".join(json.dumps({"step": s, "data": d}) + "\n" for s, d in records) + '{"step": 9, "da')


def test_summary_reads_first_and_last_values(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    val = "val-core/mempo_synthetic/reward/mean@1"
    write_metrics(
        metrics,
        [
            (0, {val: 0.25}),  # validation before training: its own line, step 0
            (1, {"mempo/reward_T/mean": 0.3, "mempo/tokens_total/mean": 400.0, "mempo/tokens_peak/mean": 150.0}),
            (2, {"mempo/reward_T/mean": 0.5, "mempo/tokens_total/mean": 380.4, "mempo/tokens_peak/mean": 149.6}),
            (2, {val: 0.40625}),  # the end-of-run validation is logged at the last step
        ],
    )
    (tmp_path / "global_step_2" / "actor" / "huggingface").mkdir(parents=True)
    (tmp_path / "global_step_2" / "actor" / "huggingface" / "config.json").write_text("{}")
    (tmp_path / "global_step_10").mkdir()  # numeric order: step 10 is the latest, not step 2
    steps = read_metrics(metrics)
    assert sorted(steps) == [0, 1, 2] and steps[2][val] == 0.40625  # the cut last line is skipped
    text = summary_text(steps, tmp_path).splitlines()
    assert text[0] == "== MemPO run: 2 steps (1 -> 2) =="
    assert "R^T (train sessions)        0.300 -> 0.500" in text
    assert any(line.startswith("held-out R^T (validation)   0.250 -> 0.406") for line in text)
    assert "TT / PT per episode         380 / 150 tokens (last step)" in text
    assert text[-1] == f"checkpoint                  {tmp_path / 'global_step_10'}"


def test_summary_of_a_resumed_one_step_run(tmp_path):
    text = summary_text({3: {"mempo/reward_T/mean": 0.375}}, tmp_path).splitlines()
    assert text[0] == "== MemPO run: 1 step (3 -> 3) =="
    assert "R^T (train sessions)        0.375 -> 0.375" in text


def test_summary_of_a_run_that_logged_nothing(tmp_path):
    assert read_metrics(tmp_path / "missing.jsonl") == {}
    assert summary_text({}, tmp_path) == f"== MemPO run: no training step logged (checkpoints: {tmp_path}) =="


def test_progress_line_of_a_console_step_line():
    from mempo_verl.run_summary import progress_line

    line = "step:3 - mempo/reward_T/mean:0.5 - val-core/x/reward/mean@1:0.25 - timing_s/step:12.34 - other:1"
    assert progress_line(line) == "step 3: R^T 0.500, held-out R^T 0.250, s 12.3"
    # tqdm redraws on the same line with carriage returns; the logger's text follows one
    assert progress_line("Epoch 1/1:  4%|▎ | 14/390 [00:38<16:33]\rstep:14 - train/loss:0.5") == "step 14: loss 0.500"
    # Ray prefixes a worker's lines with its name
    assert progress_line("\x1b[36m(TaskRunnerV1 pid=1)\x1b[0m step:2 - mempo/turns/mean:2") == "step 2: turns 2.000"
    # the validation line before training: verl prints its values as numpy reprs
    assert progress_line("step:0 - val-core/x/reward/mean@1:np.float64(0.59375)") == "step 0: held-out R^T 0.594"
    assert progress_line("INFO: nothing to see") is None and progress_line("mystep:3 - x:1") is None


def test_summary_says_how_to_evaluate_a_saved_hugging_face_folder(tmp_path):
    hf = tmp_path / "global_step_4" / "actor" / "huggingface"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    text = summary_text({4: {"mempo/reward_T/mean": 0.5}}, tmp_path).splitlines()
    assert text[-3] == f"checkpoint                  {tmp_path / 'global_step_4'} (Hugging Face folder: {hf})"
    assert text[-2] == f"evaluate it                 mempo-eval --model {hf} --data <eval sets> (README 'Evaluation')"
    indent = " " * 28  # the label column
    assert text[-1] == f"{indent}the tiny world's held-out sets: bash examples/eval/time_tiny_cpu.sh {hf}"
