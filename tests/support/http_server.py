"""A real HTTP server on a free port whose answers tests program per path, recording every request."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    delay: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_ip: str = ""
    status: int = 0
    """What the server answered."""
    at: float = field(default_factory=time.monotonic)
    """When the request was read (``time.monotonic``), for tests that measure when something arrived."""


def closed_port_url() -> str:
    """An http URL on a loopback port nothing listens on: a connection to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@dataclass
class ProgrammableServer:
    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    host: str = "127.0.0.1"
    port: int = 0

    def refusal(self, path: str, client_ip: str, headers: Mapping[str, str]) -> tuple[int, bytes] | None:
        """(status, body) to answer instead of the programmed answer; stand-ins of stricter servers override it."""
        return None

    def answer(self, path: str, body: Any = b"", *, status: int = 200, delay: float = 0.0) -> None:
        """Program ``path``: dicts/lists are sent as JSON, str as text."""
        if isinstance(body, (dict, list)):
            self.answers[path] = Answer(status, json.dumps(body).encode(), "application/json", delay)
        else:
            data = body.encode() if isinstance(body, str) else body
            self.answers[path] = Answer(status, data, "text/plain", delay)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up before a delayed answer (the timeout tests) is expected, not an error to print.
        # Printing it also formatted a traceback, which on Python 3.11 parses source with ``ast`` from this thread
        # and once broke another test's ``ast.parse`` in the main thread ("AST constructor recursion depth
        # mismatch", a CPython race).
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def start_server(state: ProgrammableServer | None = None) -> tuple[ProgrammableServer, ThreadingHTTPServer]:
    """Serve ``state`` (a new ProgrammableServer by default) on a free port of ``state.host``."""
    state = state or ProgrammableServer()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?")[0]
            record = Recorded(self.command, self.path, dict(self.headers), body, self.client_address[0])
            state.requests.append(record)
            refused = state.refusal(path, record.client_ip, self.headers)
            answer = (Answer(refused[0], refused[1], "text/plain; charset=utf-8") if refused
                      else state.answers.get(path, Answer(404, b"not programmed")))
            if answer.delay:
                time.sleep(answer.delay)
            record.status = answer.status
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = _Server((state.host, 0), Handler)
    state.port = server.server_address[1]
    state.url = f"http://{state.host}:{state.port}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return state, server
