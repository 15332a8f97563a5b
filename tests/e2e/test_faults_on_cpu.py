"""Faults during a real training run (issue 12, item 4). A rollout server that dies mid-step ends the run with a
message naming it, within the watchdog's bound, never a hang (4b); a retriever killed and restarted mid-run costs
failed lookups, counted, and the run goes on (4a). The trainer's own crash and resume (4c) is in the `tiny_world`
fixture (tests/e2e/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mempo_verl.retrieval.cli import main as retriever_cli
from mempo_verl.testing.faults import KillOnLine
from mempo_verl.testing.services import free_port, pip_install_aside, wait_healthy
from mempo_verl.testing.wandb_records import read_wandb_history

pytestmark = pytest.mark.e2e


def test_a_dead_rollout_server_fails_the_run_and_is_named(tiny_cpu_run):
    from mempo_verl.tiny.data import SHIPPED_SFT_DIR

    # the agent-loop worker's first line comes once sessions are being generated: the vLLM server (Ray actor
    # `vLLMHttpServer`, its EngineCore and worker processes) is killed 2 s later, in the middle of step 1's rollout
    kill = KillOnLine("(AgentLoopWorker", target="ray::vLLMHttpServer", delay_s=2.0)
    overrides = [
        f"actor_rollout_ref.model.path={SHIPPED_SFT_DIR}",
        "trainer.total_training_steps=1",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "mempo.run.timeout_s=0",  # this test's watchdog is the one under test
    ]
    run = tiny_cpu_run("dead-rollout", overrides, on_line=kill)
    assert kill.killed, f"the server was never killed (no {kill.trigger!r} line?): {run.result.describe()}"
    assert not run.result.ok and not run.result.timed_out, run.result.describe()
    assert "vLLMHttpServer" in run.result.describe(), run.result.describe()


# ------------------------------------------------------------------------- a retriever killed and restarted mid-run

SERVED_WORLD = Path(__file__).with_name("served_world")
OUTAGE_STEP = 2  # the retriever is killed at step 1's console line and restarted at step 2's


def _serve(index_dir: Path, port: int, log: Path) -> subprocess.Popen:
    """`mempo-retriever serve` over `index_dir` on 127.0.0.1:port, a child of this process (`KillOnLine` finds it)."""
    command = [sys.executable, "-m", "mempo_verl.retrieval.cli", "serve", "--index", str(index_dir)]
    command += ["--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(command, stdout=log.open("a"), stderr=subprocess.STDOUT)


def test_a_retriever_killed_and_restarted_mid_run_costs_failed_lookups_not_the_run(tmp_path, model_cache, tiny_cpu_run):
    """Issue 12 item 4a: the tiny world's sessions look entities up through a real `mempo-retriever serve` (the
    `synthetic_served` plugin); the server is SIGKILLed when step 1 ends and started again when step 2 ends. Step 2's
    lookups fail as `retriever_unavailable` observations, counted per session, and training goes on to the end."""
    from mempo_verl.tiny.data import SHIPPED_SFT_DIR, tiny_world_data

    site = pip_install_aside(SERVED_WORLD, tmp_path)  # on the run's PYTHONPATH: every Ray worker finds the env
    sys.path.insert(0, str(site))
    try:
        from mempo_served_world import world_corpus
    finally:
        sys.path.remove(str(site))
    # the corpus: every document of every world of the recipe's train split, in the run's own model cache
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MEMPO_CACHE_DIR", str(model_cache))
        rows = pd.read_parquet(tiny_world_data("train")).to_dict("records")
    corpus, index_dir = tmp_path / "worlds.jsonl", tmp_path / "index"
    corpus.write_text("".join(json.dumps(doc) + "\n" for doc in world_corpus(rows)))
    assert retriever_cli(["build-index", "--corpus", str(corpus), "--out", str(index_dir)]) == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    servers = [_serve(index_dir, port, tmp_path / "retriever.log")]
    wait_healthy(url, process=servers[0])

    kill = KillOnLine("step:1 - ", target=f"--index {index_dir}", delay_s=0.0)

    def on_line(line: str) -> None:
        kill(line)
        if f"step:{OUTAGE_STEP} - " in line and len(servers) == 1:
            servers.append(_serve(index_dir, port, tmp_path / "retriever.log"))

    overrides = [
        f"actor_rollout_ref.model.path={SHIPPED_SFT_DIR}",
        "trainer.total_training_steps=4",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "data.shuffle=false",
        "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "mempo.env.name=synthetic_served",
        f"+mempo.env.kwargs.url={url}",
        "mempo.run.timeout_s=0",
        "trainer.logger=[console,file,wandb]",  # WANDB_MODE=offline (conftest.trainer_env)
    ]
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    try:
        run = tiny_cpu_run("retriever-outage", overrides, on_line=on_line, env={"PYTHONPATH": pythonpath})
    finally:
        for server in servers:
            server.kill()
            server.wait()
    run.result.raise_for_failure()
    assert kill.killed and len(servers) == 2, f"killed {kill.killed}, servers started {len(servers)}"
    assert sorted(run.metrics) == [1, 2, 3, 4], sorted(run.metrics)  # training went on through the outage
    # a failure kind is logged at the steps where it happened (a missing key: none that step)
    unavailable = {step: m.get("mempo/env_failures/retriever_unavailable", 0.0) for step, m in run.metrics.items()}
    failures = {step: run.metric(step, "mempo/env_failures/mean") for step in run.metrics}
    assert unavailable[1] == 0.0 and unavailable[4] == 0.0, unavailable  # the server up: every lookup answered
    # every session of step 2 looked something up (the model's first turn is a lookup) and was refused at least once
    assert unavailable[OUTAGE_STEP] >= 1.0, unavailable
    assert failures[OUTAGE_STEP] >= unavailable[OUTAGE_STEP], failures  # they are env failures too
    # issue 12 item 5: wandb (offline) holds every step's mempo/* metrics as the file logger wrote them
    (wandb_file,) = (tmp_path / "wandb-retriever-outage").glob("wandb/offline-run-*/run-*.wandb")
    history = read_wandb_history(wandb_file)
    assert sorted(history) == [1, 2, 3, 4], sorted(history)
    for step, logged in run.metrics.items():
        expected = {key: value for key, value in logged.items() if key.startswith("mempo/")}
        assert expected and {key: history[step].get(key) for key in expected} == pytest.approx(expected), step
