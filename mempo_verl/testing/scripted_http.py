"""A real HTTP server on 127.0.0.1 that misbehaves on cue: for tests of the retrieval client and the search env.

with ScriptedHTTPServer([(500, 0.0, {"detail": "boom"}), (200, 0.0, body)]) as server:
    RetrievalClient(server.url).search(["q"], topk=1)      # first attempt 500, the retry gets `body`
    assert server.requests == 2
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ScriptedHTTPServer:
    """Answers POST i with ``script[i] = (status, delay_s, json_body)``; past the end, the last entry repeats.

    Own thread, free port, ``url`` ends in ``/retrieve``; ``requests`` counts what arrived.
    """

    def __init__(self, script: Sequence[tuple[int, float, Any]]) -> None:
        if not script:
            raise ValueError("ScriptedHTTPServer needs at least one (status, delay_s, body) entry")
        self.script = list(script)
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                status, delay_s, body = outer.script[min(outer.requests, len(outer.script) - 1)]
                outer.requests += 1
                time.sleep(delay_s)
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up: expected in slow-server tests

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/retrieve"

    def __enter__(self) -> ScriptedHTTPServer:
        # a short poll interval keeps shutdown() (which waits for the next poll) fast
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A ``/retrieve`` URL on a port that was free a moment ago: nothing listens, connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/retrieve"
