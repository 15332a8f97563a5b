"""Test and benchmark helpers for real local services: a free port, a server's readiness, a package installed aside.

port = free_port()
server = subprocess.Popen([..., "serve", "--port", str(port)])
wait_healthy(f"http://127.0.0.1:{port}", process=server)
site = pip_install_aside(Path("examples/custom_env"), tmp_path)   # then put `site` on sys.path / PYTHONPATH
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it; another process may take it before it is used)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Poll ``GET {url}/health`` until it answers 200; raise ``TimeoutError`` after ``timeout_s``, or
    ``RuntimeError`` as soon as ``process`` (the server, when this process started it) has exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {process.returncode} before answering /health")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer /health within {timeout_s:.0f} s")
        time.sleep(0.5)


def pip_install_aside(source: Path, work_dir: Path) -> Path:
    """pip-install the package at ``source`` (offline, no dependencies) into ``work_dir/site``, returned: a folder
    to put on ``sys.path`` or ``PYTHONPATH``, so that its entry points are found without touching the environment.
    The build runs on a copy, because pip writes ``build/`` and ``*.egg-info`` into the tree it builds."""
    skip = shutil.ignore_patterns("build", "*.egg-info")
    copy = shutil.copytree(source, work_dir / f"{source.name}_src", ignore=skip)
    site = work_dir / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--disable-pip-version-check", "--target", str(site), str(copy)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return site
