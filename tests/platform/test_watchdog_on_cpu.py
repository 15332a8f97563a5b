"""`run_with_watchdog`: time limit over a whole process tree, and the first real error instead of the symptom."""

from __future__ import annotations

import sys
import textwrap
import time

import psutil

from mempo_verl.platform.watchdog import ErrorScanner, run_with_watchdog

# What a vLLM engine failure looks like in a Ray driver's log (RAY_DEDUP_LOGS=0), shortened.
WORKER_FAILURE_LOG = """\
(TaskRunnerV1 pid=101) INFO: Total training steps: 2
(vLLMHttpServer pid=202) Traceback (most recent call last):
(vLLMHttpServer pid=202)   File "vllm/model_executor/layers/linear.py", line 1338, in weight_loader
(TaskRunnerV1 pid=101) Training Progress:   0%|          | 0/2
(vLLMHttpServer pid=202)     param.weight_loader(param, loaded_weight, shard_id)
(vLLMHttpServer pid=202) AttributeError: 'Parameter' object has no attribute 'weight_loader'
(TaskRunnerV1 pid=101) Traceback (most recent call last):
(TaskRunnerV1 pid=101)   File "verl/trainer/ppo/v1/replay_buffer.py", line 510, in sample
(TaskRunnerV1 pid=101) RuntimeError: Sync replay buffer selected terminal groups with no materializable trajectories.
Traceback (most recent call last):
  File "verl/trainer/main_ppo.py", line 92, in run_ppo
ray.exceptions.RayTaskError(RuntimeError): ray::TaskRunnerV1.run() (pid=101)
"""


def scan(text: str) -> ErrorScanner:
    scanner = ErrorScanner()
    for line in text.splitlines(keepends=True):
        scanner.feed(line)
    return scanner


def test_first_real_error_is_the_worker_exception_not_the_symptom():
    scanner = scan(WORKER_FAILURE_LOG)
    assert [e.source for e in scanner.events] == ["(vLLMHttpServer pid=202)", "(TaskRunnerV1 pid=101)", "driver"]
    first = scanner.first_error()
    assert first.source == "(vLLMHttpServer pid=202)"
    assert first.exception.startswith("AttributeError: 'Parameter' object has no attribute 'weight_loader'")
    assert "linear.py" in first.render()  # the interleaved driver line is not part of the vLLM traceback
    assert "Training Progress" not in first.render()
    assert scanner.fatal_seen_at is not None  # "no materializable trajectories" means the run is doomed


def test_only_symptoms_fall_back_to_the_earliest_one():
    scanner = scan("\n".join(WORKER_FAILURE_LOG.splitlines()[6:]))
    assert "no materializable trajectories" in scanner.first_error().exception


def test_ansi_colour_codes_are_ignored():
    scanner = scan(
        "\x1b[36m(WorkerDict pid=7)\x1b[0m Traceback (most recent call last):\n"
        "\x1b[36m(WorkerDict pid=7)\x1b[0m ValueError: boom\n"
    )
    assert scanner.first_error().source == "(WorkerDict pid=7)"


def test_nested_vllm_engine_prefix_names_the_engine_process():
    scanner = scan(
        "(vLLMHttpServer pid=5) (EngineCore pid=6) ERROR [core.py:1] EngineCore encountered a fatal error.\n"
        "(vLLMHttpServer pid=5) (EngineCore pid=6) Traceback (most recent call last):\n"
        '(vLLMHttpServer pid=5) (EngineCore pid=6)   File "vllm/v1/engine/core.py", line 1, in run\n'
        "(vLLMHttpServer pid=5) (EngineCore pid=6) ValueError: Unsupported head size: 16\n"
    )
    first = scanner.first_error()
    assert first.source == "(vLLMHttpServer pid=5) (EngineCore pid=6)"
    assert first.exception == "ValueError: Unsupported head size: 16"
    assert scanner.fatal_seen_at is not None


def test_a_dead_actor_is_named_by_the_lines_after_the_exception():
    # what an agent-loop worker logs when the vLLM server it calls was killed (tests/e2e/test_faults_on_cpu.py)
    scanner = scan(
        "(AgentLoopWorkerTQ pid=9) Traceback (most recent call last):\n"
        '(AgentLoopWorkerTQ pid=9)   File "verl/workers/rollout/llm_server.py", line 150, in generate\n'
        "(AgentLoopWorkerTQ pid=9) ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing.\n"
        "(AgentLoopWorkerTQ pid=9) \tclass_name: vLLMHttpServer\n"
        "(AgentLoopWorkerTQ pid=9) \tname: vllm_server_0_0\n"
        "(TaskRunnerV1 pid=3) INFO: unrelated, from another process\n"
        "(AgentLoopWorkerTQ pid=9) The actor is dead because its worker process has died.\n"
        "(AgentLoopWorkerTQ pid=9) INFO: the next line of the worker: not part of the message\n"
    )
    (event,) = scanner.events
    assert event.detail == (
        "\tclass_name: vLLMHttpServer",
        "\tname: vllm_server_0_0",
        "The actor is dead because its worker process has died.",
    )
    rendered = event.render()
    assert "class_name: vLLMHttpServer" in rendered.splitlines()[1] and "INFO" not in rendered
    assert scanner.fatal_seen_at is not None  # ActorDiedError: the run cannot succeed


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_success_writes_the_log(tmp_path):
    result = run_with_watchdog(python("print('hello')"), timeout_s=60, log_path=tmp_path / "ok.log")
    assert result.ok and result.returncode == 0 and result.first_error is None
    assert (tmp_path / "ok.log").read_text() == "hello\n" and len(result.line_times) == 1


def test_failure_reports_the_exception(tmp_path):
    result = run_with_watchdog(python("raise KeyError('input_ids')"), timeout_s=60, log_path=tmp_path / "f.log")
    assert not result.ok and result.returncode == 1
    assert result.first_error.exception == "KeyError: 'input_ids'"
    assert "first error: driver KeyError: 'input_ids'" in result.describe()


def test_time_limit_kills_the_whole_tree(tmp_path):
    code = """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(child.pid, flush=True)
        time.sleep(120)
    """
    start = time.monotonic()
    result = run_with_watchdog(python(code), timeout_s=3, log_path=tmp_path / "hang.log", sample_every_s=0.2)
    assert result.timed_out and not result.ok and result.returncode is None
    assert time.monotonic() - start < 30
    child_pid = int((tmp_path / "hang.log").read_text().split()[0])
    assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
    assert result.peak_tree_pss_bytes > 0


def test_a_hang_after_a_fatal_worker_error_is_cut_short_and_names_the_error(tmp_path):
    code = """
        import sys, time
        print("(vLLMHttpServer pid=9) Traceback (most recent call last):")
        print("(vLLMHttpServer pid=9) ValueError: Failed to infer device type")
        print("(TaskRunnerV1 pid=8) RuntimeError: Sync replay buffer selected terminal groups with no materializable"
              " trajectories.", flush=True)
        time.sleep(120)
    """
    result = run_with_watchdog(
        python(code), timeout_s=60, log_path=tmp_path / "f.log", fatal_grace_s=1, sample_every_s=0.2
    )
    assert result.killed_after_fatal and not result.timed_out and result.wall_s < 30
    assert result.first_error.exception == "ValueError: Failed to infer device type"
    assert "killed after a fatal worker error" in result.describe()
