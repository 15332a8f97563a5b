"""`testing.services` against real processes: a real HTTP server on 127.0.0.1, a real pip install."""

import subprocess
import sys
from pathlib import Path

import pytest

from mempo_verl.testing.services import free_port, pip_install_aside, wait_healthy

# a stdlib server whose /health answers 200 after a delay (so the wait must poll), every other path 404
SLOW_HEALTH = """
import http.server, sys, time
time.sleep(1.5)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_wait_healthy_polls_until_the_server_answers():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SLOW_HEALTH, str(port)])
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout_s=30, process=server)
        assert server.poll() is None  # returned because it answered, not because it died
    finally:
        server.kill()
        server.wait()


def test_wait_healthy_names_a_server_that_died():
    server = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_healthy(f"http://127.0.0.1:{free_port()}", timeout_s=30, process=server)


def test_wait_healthy_times_out_when_nothing_listens():
    with pytest.raises(TimeoutError, match="did not answer /health within 1 s"):
        wait_healthy(f"http://127.0.0.1:{free_port()}", timeout_s=1)


def test_pip_install_aside_leaves_the_source_clean(tmp_path):
    source = tmp_path / "pkg"
    (source / "src" / "aside_demo").mkdir(parents=True)
    (source / "src" / "aside_demo" / "__init__.py").write_text("VALUE = 7\n")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "aside-demo"\nversion = "0.1"\n[tool.setuptools.packages.find]\nwhere = ["src"]\n'
    )
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    site = pip_install_aside(source, tmp_path / "work")
    assert (site / "aside_demo" / "__init__.py").read_text() == "VALUE = 7\n"
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before  # no build/ or egg-info in the source
    assert isinstance(site, Path) and site.is_dir()
