"""meshbot's WSGI application: a small route table in front of Bolt, and the readiness probe.

Routes:
  POST /slack/events   slash commands, interactivity and events: ``bot.slack.ingress`` verifies the
                       signature before anything parses the body (401/400), drops replays (200), then Bolt;
                       404 without SLACK_SIGNING_SECRET, when they come over Socket Mode only
  GET  /healthz        the process is alive (depends on nothing outside it)
  GET  /readyz         the database takes a write; Slack's state (checked in the background) is reported
  GET  /metrics        Prometheus text format
  POST /alertmanager   Alertmanager webhooks (bearer token), added by ``bot.server.wiring``
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt import App
from slack_bolt.request import BoltRequest

from bot.runtime.loops import WakeableLoop
from bot.runtime.metrics import Metrics
from bot.runtime.priority import Answering
from bot.runtime.routes import Route, json_answer
from bot.slack.client import SlackClient, SlackError
from bot.slack.ingress import RateLimitedLog, Rejection, SlackHeaders, SlackRequestGate
from bot.storage.database import Database, DatabaseError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024

StartResponse = Callable[..., Any]

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


def request_kind(fields: dict[str, Any]) -> str:
    """slash_command, block_actions, event…: for the requests-by-kind metric, from the gate's parsed body."""
    if "command" in fields:
        return "slash_command"
    kind = fields.get("type")
    if isinstance(kind, str) and kind:
        return "event" if kind == "event_callback" else kind
    return "unknown"


BOLT_HEADERS = {"content-type": "CONTENT_TYPE", "x-slack-request-timestamp": "HTTP_X_SLACK_REQUEST_TIMESTAMP",
                "x-slack-signature": "HTTP_X_SLACK_SIGNATURE", "x-slack-retry-num": "HTTP_X_SLACK_RETRY_NUM",
                "x-slack-retry-reason": "HTTP_X_SLACK_RETRY_REASON"}
"""What Bolt is shown of a request's headers (and where WSGI keeps each): not ``x-slack-bolt-lazy-*``, which would
switch a signed request into Bolt's lazy-listener mode."""


def bolt_request(environ: dict, fields: dict[str, Any]) -> BoltRequest:
    """The request for ``App.dispatch``, with the body the gate already parsed.

    Bolt's WSGI adapter would parse the raw body again, and its parser (``slack_bolt.request.internals.parse_body``)
    treats any form body containing the text "payload" as an interaction whose ``payload`` field it then cannot find:
    the body becomes ``{}`` and Bolt answers 404 "unhandled request".  Every slash command whose text, channel, user or
    workspace name contains "payload" (``/mesh status payments-payload``) failed that way.  Bolt takes a parsed body
    only in its ``socket_mode`` mode (the Socket Mode adapter's envelopes are parsed too); the mode changes nothing
    else here: it only lets Bolt's own signature check be skipped, and that check is off (``bot.slack.ingress``
    verified the signature before this)."""
    headers = {name: environ[key] for name, key in BOLT_HEADERS.items() if key in environ}
    return BoltRequest(body=fields, headers=headers, mode="socket_mode")


SLACK_CHECK_SECONDS = 30.0
SLACK_CHECK_TIMEOUT = 5
DATABASE_CHECK_TIMEOUT = 2.0


class SlackStatus:
    """Whether Slack accepts the token, as last seen by a background ``auth.test`` every ``interval`` seconds.

    The readiness probe only reads the last answer: a slow or unreachable Slack must never hold an HTTP
    thread (Kubernetes' probe times out after a few seconds, and liveness shares those threads).
    """

    def __init__(self, slack: SlackClient, interval: float = SLACK_CHECK_SECONDS):
        self._slack = slack
        self._interval = interval
        self._state: tuple[bool | None, str] = (None, "not checked yet")
        self._checked_at: float | None = None
        self._loop = WakeableLoop("slack-status", self._check_once, idle=interval)

    def start(self) -> SlackStatus:
        self._loop.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        self._loop.stop(timeout)

    def _check_once(self) -> float:
        try:
            self._slack.auth_test()
            state = (True, "ok")
        except SlackError as exc:
            reason = "unreachable" if exc.transient else "token not accepted"
            state = (False, f"{reason}: {exc.error}")
        self._state, self._checked_at = state, time.monotonic()
        return self._interval

    def refresh(self) -> None:
        """Check again now (in the background thread)."""
        self._loop.wake()

    def describe(self) -> dict[str, Any]:
        ok, detail = self._state
        age = None if self._checked_at is None else round(time.monotonic() - self._checked_at, 1)
        return {"slack": detail, "slack_checked_seconds_ago": age}


class Readiness:
    """``/readyz``: ready when the database takes a write; Slack's state is reported but does not gate.

    Alertmanager only delivers to ready endpoints.  Its notifications are stored before anything is posted
    and the outbox posts them when Slack is back, so a Slack outage must not turn meshbot not-ready:
    that would make Alertmanager drop the very notifications the outbox exists to keep.
    """

    def __init__(self, database: Database, slack: SlackStatus,
                 reporters: Iterable[Callable[[], dict[str, Any]]] = ()):
        self.database = database
        self.slack = slack
        self.reporters = list(reporters)
        """More facts for the body that do not gate readiness (scheduled work, for example)."""
        self._database_check: threading.Thread | None = None
        self._database_state = "not checked yet"
        self._lock = threading.Lock()

    def add_reporter(self, reporter: Callable[[], dict[str, Any]]) -> None:
        self.reporters.append(reporter)

    def check(self) -> tuple[bool, dict[str, Any]]:
        details: dict[str, Any] = {"database": self._database(), **self.slack.describe()}
        for reporter in self.reporters:
            try:
                details.update(reporter())
            except Exception as exc:  # a report is informational; the probe still answers
                details[getattr(reporter, "__name__", "reporter")] = f"failed: {type(exc).__name__}"
        return details["database"] == "ok", details

    def _database(self) -> str:
        """One write at a time, waited for at most DATABASE_CHECK_TIMEOUT: a busy database makes the probe
        answer "busy", never queue probes behind it."""
        with self._lock:
            if self._database_check is None or not self._database_check.is_alive():
                self._database_check = threading.Thread(target=self._write_once, name="readiness-db", daemon=True)
                self._database_check.start()
            check = self._database_check
        check.join(DATABASE_CHECK_TIMEOUT)
        if check.is_alive():
            return f"busy: no write committed within {DATABASE_CHECK_TIMEOUT:.0f}s"
        return self._database_state

    def _write_once(self) -> None:
        try:
            self.database.check_writable()
            self._database_state = "ok"
        except DatabaseError as exc:
            self._database_state = str(exc)


class WebApp:
    """The WSGI application: a small route table in front of Bolt."""

    def __init__(self, bolt: App, metrics: Metrics, readiness: Readiness, *, gate: SlackRequestGate | None,
                 answering: Answering | None = None):
        """``gate`` is None when Slack events come over Socket Mode only (no signing secret): then
        ``/slack/events`` answers 404, since Bolt would verify against a placeholder anyone can sign with.
        ``answering`` counts the Slack requests being answered once their signature is verified, so background work
        lets them go first (``bot.runtime.priority``).  Only signed ones: a request anyone can send (unsigned, or to
        a route without a signature) must not be able to hold meshbot's background work back."""
        self.bolt = bolt
        self.metrics = metrics
        self.gate = gate
        self._rejections = RateLimitedLog(log)
        self.routes: dict[tuple[str, str], Route] = {
            # Liveness: nothing outside this process (no database, no Slack), so a slow dependency never
            # gets the pod restarted; it only answers from one of the HTTP threads.
            ("GET", "/healthz"): lambda environ, body: json_answer(200, {"status": "alive"}),
            ("GET", "/readyz"): self._ready,
            ("GET", "/metrics"): lambda environ, body: (200, {"Content-Type": metrics.content_type},
                                                        metrics.exposition()),
        }
        self.readiness = readiness
        """Its Slack status thread is started and stopped with the server (``bot.server.meshbot``)."""
        self.answering = answering or Answering(0)

    def add_route(self, method: str, path: str, route: Route) -> None:
        self.routes[(method, path)] = route

    def _ready(self, environ: dict, body: bytes) -> tuple[int, dict[str, str], bytes]:
        ready, details = self.readiness.check()
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
            if self.gate is None:
                return self._send(start_response, 404, {"Content-Type": "text/plain"},
                                  b"Slack events come over Socket Mode here (SLACK_SIGNING_SECRET is not set)")
            if method != "POST":
                return self._send(start_response, 405, {"Content-Type": "text/plain"}, b"POST only")
            return self._slack_events(self.gate, environ, body, start_response)
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

    def _slack_events(self, gate: SlackRequestGate, environ: dict, body: bytes,
                      start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        content_type = environ.get("CONTENT_TYPE", "")
        headers = SlackHeaders.from_environ(environ)
        refusal = gate.signature_refusal(headers, body)
        if refusal is not None:
            return self._reject(environ, body, *refusal, start_response)
        # Signed: from here until the ack is written, work started behind the acks waits (bot.runtime.priority).
        # Counting starts before the replay check on purpose: its write takes turns between the request threads,
        # and a count that left those waits out saw "no ack in flight" most of the time (ack p99 back to 450 ms).
        with self.answering.answer():
            admission = gate.admit_signed(headers, body, content_type)
            if admission.rejection is not None:
                return self._reject(environ, body, admission.rejection, admission.detail, start_response)
            if admission.duplicate:
                self.metrics.duplicates.labels(transport="http").inc()
                self._rejections.warning("duplicate", "Slack request from %s answered without running it again: %s",
                                         _client(environ), admission.detail)
                return self._send(start_response, 200, {"Content-Type": "text/plain"}, b"")
            response = self.bolt.dispatch(bolt_request(environ, admission.body))
            answer = self._send(start_response, response.status, _single_values(response.headers),
                                response.body.encode())
        self.metrics.requests.labels(kind=request_kind(admission.body)).inc()
        self.metrics.ack_seconds.observe(time.perf_counter() - started)
        return answer

    def _reject(self, environ: dict, body: bytes, reason: Rejection, detail: str,
                start_response: StartResponse) -> list[bytes]:
        """One log line (rate-limited) without the body, a count by reason, and a 401 or 400 with no details."""
        self.metrics.requests.labels(kind="rejected").inc()
        self.metrics.rejected.labels(reason=reason.value).inc()
        self._rejections.warning(reason.value, "refused Slack request from %s (%d bytes): %s: %s",
                                 _client(environ), len(body), reason.value, detail)
        status = reason.status
        return self._send(start_response, status, {"Content-Type": "application/json"},
                          json.dumps({"error": "invalid request" if status == 401 else "malformed request"}).encode())

    @staticmethod
    def _send(start_response: StartResponse, status: int, headers: dict[str, str], body: bytes) -> list[bytes]:
        start_response(f"{status} {_REASONS.get(status, '')}".strip(),
                       [*headers.items(), ("Content-Length", str(len(body)))])
        return [body]


def _single_values(headers: dict[str, Any]) -> dict[str, str]:
    """Bolt's response headers (a list of values per name) as ``_send`` takes them; Content-Length is ``_send``'s."""
    return {name: ", ".join(values) if isinstance(values, (list, tuple)) else str(values)
            for name, values in headers.items() if name.lower() != "content-length"}


def _client(environ: dict) -> str:
    return str(environ.get("REMOTE_ADDR") or "unknown")
