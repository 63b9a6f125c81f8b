"""meshbot's WSGI application: a small route table in front of Bolt, and the readiness probe.

Routes:
  POST /slack/events   slash commands, interactivity and events (Bolt verifies every signature);
                       404 without SLACK_SIGNING_SECRET, when they come over Socket Mode only
  GET  /healthz        the process is alive
  GET  /readyz         the database is writable and Slack accepts the token
  GET  /metrics        Prometheus text format
  POST /alertmanager   Alertmanager webhooks (bearer token), added by ``bot.server.wiring``
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.server.metrics import Metrics
from bot.server.routes import Route, json_answer
from bot.slack.client import SlackClient, SlackError
from bot.storage.database import Database, DatabaseError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
READY_CACHE_SECONDS = 30.0

StartResponse = Callable[..., Any]

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


def request_kind(body: bytes, content_type: str) -> str:
    """slash_command, block_actions, event…: for the requests-by-kind metric (cheap: on the ack path)."""
    try:
        if "json" in content_type:
            return str(json.loads(body or b"{}").get("type") or "unknown").replace("event_callback", "event")
        if b"&command=" in body or body.startswith(b"command="):
            return "slash_command"
        if body.startswith(b"payload="):
            payload = urllib.parse.unquote_plus(body[len(b"payload="):].split(b"&", 1)[0].decode())
            return str(json.loads(payload).get("type") or "unknown")
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    return "unknown"


@dataclass
class Readiness:
    database: Database
    slack: SlackClient
    _checked_at: float = 0.0
    _slack_ok: tuple[bool, str] = (False, "not checked yet")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self) -> tuple[bool, dict[str, str]]:
        details: dict[str, str] = {}
        try:
            self.database.check_writable()
            details["database"] = "ok"
        except DatabaseError as exc:
            details["database"] = str(exc)
        with self._lock:
            if time.monotonic() - self._checked_at > READY_CACHE_SECONDS or not self._slack_ok[0]:
                try:
                    self.slack.auth_test()
                    self._slack_ok = (True, "ok")
                except SlackError as exc:
                    self._slack_ok = (False, f"token not accepted: {exc.error}")
                self._checked_at = time.monotonic()
            details["slack"] = self._slack_ok[1]
        return all(v == "ok" for v in details.values()), details


class WebApp:
    """The WSGI application: a small route table in front of Bolt."""

    def __init__(self, bolt: App, metrics: Metrics, readiness: Readiness, *, slack_events_over_http: bool = True):
        self.bolt = bolt
        self.metrics = metrics
        self._slack = SlackRequestHandler(bolt)
        self.slack_events_over_http = slack_events_over_http
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/healthz"): lambda environ, body: json_answer(200, {"status": "alive"}),
            ("GET", "/readyz"): self._ready,
            ("GET", "/metrics"): lambda environ, body: (200, {"Content-Type": metrics.content_type},
                                                        metrics.exposition()),
        }
        self._readiness = readiness

    def add_route(self, method: str, path: str, route: Route) -> None:
        self.routes[(method, path)] = route

    def _ready(self, environ: dict, body: bytes) -> tuple[int, dict[str, str], bytes]:
        ready, details = self._readiness.check()
        return json_answer(200 if ready else 503, {"ready": ready, **details})

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            return self._send(start_response, 413, {"Content-Type": "text/plain"}, b"request body too large")
        body = environ["wsgi.input"].read(length) if length else b""
        if path == "/slack/events":
            if not self.slack_events_over_http:
                # With no signing secret Bolt would verify against a placeholder anyone can sign with.
                return self._send(start_response, 404, {"Content-Type": "text/plain"},
                                  b"Slack events come over Socket Mode here (SLACK_SIGNING_SECRET is not set)")
            if method != "POST":
                return self._send(start_response, 405, {"Content-Type": "text/plain"}, b"POST only")
            return self._slack_events(environ, body, start_response)
        route = self.routes.get((method, path))
        if route is None:
            known = {p for _, p in self.routes}
            status = 405 if path in known else 404
            return self._send(start_response, status, {"Content-Type": "text/plain"}, _REASONS[status].encode())
        try:
            status, headers, answer = route(environ, body)
        except Exception:
            log.exception("%s %s failed", method, path)
            status, headers, answer = json_answer(500, {"error": "internal error; see meshbot's log"})
        return self._send(start_response, status, headers, answer)

    def _slack_events(self, environ: dict, body: bytes, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        environ["wsgi.input"] = io.BytesIO(body)
        captured: dict[str, str] = {}

        def remember_status(status: str, headers: list, exc_info: Any = None) -> Any:
            captured["status"] = status
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        answer = list(self._slack(environ, remember_status))
        kind = request_kind(body, environ.get("CONTENT_TYPE", ""))
        if captured.get("status", "").startswith("401"):
            kind = "rejected"
        self.metrics.requests.labels(kind=kind).inc()
        self.metrics.ack_seconds.observe(time.perf_counter() - started)
        return answer

    @staticmethod
    def _send(start_response: StartResponse, status: int, headers: dict[str, str], body: bytes) -> list[bytes]:
        start_response(f"{status} {_REASONS.get(status, '')}".strip(),
                       [*headers.items(), ("Content-Length", str(len(body)))])
        return [body]
