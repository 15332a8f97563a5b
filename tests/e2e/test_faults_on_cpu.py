"""A rollout server that dies mid-step ends the run with a message naming it, within the watchdog's bound, never a
hang (issue 12, item 4b). The trainer's own crash and resume is in the `tiny_world` fixture (tests/e2e/conftest.py).
"""

from __future__ import annotations

import pytest

from mempo_verl.testing.faults import KillOnLine

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
