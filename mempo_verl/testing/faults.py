"""Fault injection for the end-to-end tests: kill part of a running trainer, triggered by its own output.

kill = KillOnLine("step:2 - ", target="hydra.run.dir=/tmp/x/hydra-rl")    # the driver, mid-step 3
run_with_watchdog(cmd, 600, log, on_line=kill)
"""

from __future__ import annotations

import threading

import psutil


class KillOnLine:
    """An ``on_line`` callback: ``delay_s`` after the first output line containing ``trigger``, SIGKILL every
    descendant of this process whose command line contains ``target``, with all of its own descendants.

    No chance to clean up, as in a crash: of the driver (match its command line), or of one Ray actor (its process
    title is ``ray::<ClassName>…``, e.g. ``ray::vLLMHttpServer``).
    """

    def __init__(self, trigger: str, target: str, delay_s: float = 4.0):
        self.trigger, self.target, self.delay_s = trigger, target, delay_s
        self.fired = threading.Event()
        self.killed: list[str] = []
        """The command lines killed (their first 200 characters), for the test's messages."""

    def __call__(self, line: str) -> None:
        if self.trigger in line and not self.fired.is_set():
            self.fired.set()
            threading.Timer(self.delay_s, self._kill).start()

    def _kill(self) -> None:
        for process in psutil.Process().children(recursive=True):
            try:
                command = " ".join(process.cmdline())
                if self.target not in command:
                    continue
                victims = [process, *process.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            self.killed.append(command[:200])
            for victim in victims:
                try:
                    victim.kill()
                except psutil.NoSuchProcess:
                    pass
