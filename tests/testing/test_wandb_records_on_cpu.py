"""`testing.wandb_records` against real offline wandb runs (wandb-core writes the file; nothing is faked)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mempo_verl.testing.wandb_records import BLOCK_SIZE, read_wandb_history, wandb_records

# a child process per run: wandb.init starts its wandb-core service, which must not outlive the run into the suite
LOG_RUN = """
import json, sys, wandb
steps = json.loads(sys.argv[1])
run = wandb.init(project="p", name="n", config={"k": 1})
for step, values in steps.items():
    run.log(values, step=int(step))
run.finish()
"""


def offline_run(tmp_path: Path, steps: dict[int, dict[str, object]]) -> Path:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    subprocess.run([sys.executable, "-c", LOG_RUN, json.dumps(steps)], env=env, check=True, timeout=120)
    (path,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    return path


def test_history_is_what_was_logged(tmp_path):
    steps = {1: {"mempo/reward_T/mean": 0.25, "timing_s/step": 3.5}, 2: {"mempo/reward_T/mean": 0.75, "n": 7}}
    history = read_wandb_history(offline_run(tmp_path, steps))
    assert history == steps  # wandb's own _step/_runtime/_timestamp are left out


def test_records_larger_than_a_block_are_reassembled(tmp_path):
    # ~40 KB of metric names in one step: its history record spans two 32 KiB blocks (FIRST + LAST chunks)
    wide = {f"metric/{'x' * 30}_{i:04d}": i / 8 for i in range(1000)}
    path = offline_run(tmp_path, {1: {"a": 1.0}, 2: wide, 3: {"a": 3.0}})
    assert path.stat().st_size > BLOCK_SIZE
    history = read_wandb_history(path)
    assert history[1] == {"a": 1.0} and history[3] == {"a": 3.0}
    assert history[2] == wide


def test_a_crash_cut_record_ends_the_history(tmp_path):
    path = offline_run(tmp_path, {1: {"a": 1.0}, 2: {"a": 2.0}})
    full = path.read_bytes()
    kinds = [r.WhichOneof("record_type") for r in wandb_records(path)]
    cut = tmp_path / "cut.wandb"
    cut.write_bytes(full[: len(full) - 3])  # the last record loses its tail, as when a process dies mid-write
    assert [r.WhichOneof("record_type") for r in wandb_records(cut)] == kinds[:-1]


def test_not_a_wandb_file_is_refused(tmp_path):
    path = tmp_path / "x.wandb"
    path.write_bytes(b"PK\x03\x04 not a transaction log")
    with pytest.raises(ValueError, match="not a wandb transaction log"):
        list(wandb_records(path))
