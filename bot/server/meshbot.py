"""``meshbot serve``: the HTTP server (waitress, multi-threaded) and, optionally, Socket Mode.

Routes:
  POST /slack/events   slash commands, interactivity and events (Bolt verifies every signature);
                       404 without SLACK_SIGNING_SECRET, when they come over Socket Mode only
  GET  /healthz        the process is alive
  GET  /readyz         the database is writable and Slack accepts the token
  GET  /metrics        Prometheus text format
  POST /alertmanager   Alertmanager webhooks (bearer token), see bot.incidents.intake
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
import time
import urllib.parse
from datetime import timedelta
from zoneinfo import ZoneInfo
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.errors import SlackApiError
from waitress.server import create_server

from bot.approvals import blocks as approval_blocks
from bot.approvals import commands as approval_commands
from bot.incidents import commands as incident_commands
from bot.reminders import commands as reminder_commands  # noqa: F401  (/mesh handlers)
from bot.slack.app import Services, build_bolt_app
from bot.approvals.desk import ApprovalDesk, ApprovalPolicy
from bot.reminders.service import LeaseLedger, ReminderService
from bot.reminders.scheduler import CertificateScheduler
from bot.cluster import ClusterAccess
from bot.storage.database import Database, DatabaseError
from bot.diagnosis import Diagnostician
from bot.incidents.flow import IncidentFlow
from bot.incidents.log import IncidentLog
from bot.incidents.intake import alertmanager_route
from bot.server.metrics import Metrics
from bot.incidents.outbox import Outbox
from bot.incidents.playbook_loader import DEFAULT_PLAYBOOKS_DIR, load_playbooks
from bot.incidents.playbooks import PlaybookError, PlaybookSet
from bot.server.routes import Route, json_answer
from bot.settings import Settings, SettingsError
from bot.slack.client import SlackClient, SlackError, build_web_client
from commands.clients.lease import LeaderElector

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
READY_CACHE_SECONDS = 30.0
MESSENGER_THREADS = 4

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


@dataclass
class Meshbot:
    """Everything ``meshbot serve`` runs, wired once; tests build it with a fake Slack URL and port 0."""

    settings: Settings
    services: Services
    database: Database
    web: WebApp
    executor: ThreadPoolExecutor
    """The messenger pool: command handlers that only talk to Slack."""
    outbox: Any = None
    incident_flow: Any = None
    approvals: Any = None
    scheduler: Any = None
    server: Any = None
    socket_mode: Any = None
    _thread: threading.Thread | None = None
    _stopped: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.server.effective_port}"

    def start(self) -> Meshbot:
        """Bind the port (``settings.port``; 0 picks a free one) and serve in a background thread."""
        self.server = create_server(self.web, host=self.settings.host, port=self.settings.port,
                                    threads=self.settings.http_threads, max_request_body_size=MAX_BODY_BYTES,
                                    ident="meshbot", clear_untrusted_proxy_headers=True)
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()
        self.outbox.start()
        self.incident_flow.start()
        if self.approvals:
            self.approvals.start()
        if self.scheduler:
            self.scheduler.start()
        if self.settings.slack_app_token:
            self._start_socket_mode()
        log.info("meshbot listening on %s", self.url)
        return self

    def _serve(self) -> None:
        try:
            self.server.run()
        except (OSError, ValueError):
            if not self._stopped:  # closing the listening socket under asyncore ends run() with EBADF
                raise

    def _start_socket_mode(self) -> None:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        self.socket_mode = SocketModeHandler(self.web._slack.app, app_token=self.settings.slack_app_token,
                                             logger=logging.getLogger("meshbot.socket_mode"))
        try:
            self.socket_mode.connect()
        except SlackApiError as exc:
            self.stop()
            raise SettingsError(f"SLACK_APP_TOKEN: Slack refused it for Socket Mode "
                                f"({exc.response.get('error', 'unknown error')})") from None
        log.info("connected to Slack in Socket Mode")

    def _stop_socket_mode(self) -> None:
        # slack_sdk's client closes its socket only once its reader's recv() times out (3 s, holding a
        # lock close() needs); shutting the socket down first wakes the reader, so close() is immediate.
        session = self.socket_mode.client.current_session
        sock = session.sock if session is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # the peer may have closed it already
                sock.shutdown(socket.SHUT_RDWR)
        self.socket_mode.close()
        log.info("disconnected from Slack's Socket Mode")

    def wait(self) -> None:
        while self._thread and self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests, let running work finish (bounded), close the database. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.socket_mode is not None:
            self._stop_socket_mode()
        if self.server is not None:
            self.server.close()
            # close() stops accepting; the request threads end only when the dispatcher is shut down.
            self.server.task_dispatcher.shutdown(cancel_pending=False, timeout=timeout)
        self.incident_flow.stop(timeout)
        if self.approvals:
            self.approvals.stop()
        if self.scheduler:
            self.scheduler.stop()
        self.executor.shutdown(wait=True, cancel_futures=False)
        self.services.workers.shutdown(wait=True, cancel_futures=False)
        # Whatever is still queued stays in the database and is delivered after the next start.
        self.outbox.stop(timeout)
        if self._thread:
            self._thread.join(timeout)
        self.database.close()


def build(settings: Settings) -> Meshbot:
    """Wire the bot from settings; raises SettingsError for what ``serve`` cannot run without."""
    settings.require("slack_bot_token")
    if not settings.slack_app_token:
        settings.require("slack_signing_secret")
    if settings.alertmanager_token:
        settings.require("channel")
    playbooks = _load_playbooks(settings)
    metrics = Metrics()
    web_client = build_web_client(settings.slack_bot_token, settings.slack_api_url)
    slack = SlackClient(web_client, on_error=metrics.slack_error)
    database = Database(settings.db_path)
    database.migrate()
    cluster = ClusterAccess(settings)
    workers = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="work")
    services = Services(settings=settings, slack=slack, diagnostician=Diagnostician(cluster), metrics=metrics,
                        workers=workers)
    executor = ThreadPoolExecutor(max_workers=MESSENGER_THREADS, thread_name_prefix="messenger")
    incidents = IncidentLog(database)
    # The outbox does its own backoff per channel, so its client must not sleep on retries itself.
    outbox_slack = SlackClient(build_web_client(settings.slack_bot_token, settings.slack_api_url, max_retries=0),
                               on_error=metrics.slack_error)
    outbox = Outbox(database, outbox_slack, incidents, metrics)
    flow = IncidentFlow(database=database, incidents=incidents, outbox=outbox, playbooks=playbooks,
                        diagnostician=services.diagnostician, workers=workers, channel=settings.channel,
                        metrics=metrics)
    services.incident_flow = flow
    approvals = None
    if not settings.scenario:
        approvals = ApprovalDesk(database=database, incidents=incidents, outbox=outbox, slack=slack,
                                 policy=approval_policy(settings), kube=cluster.client, workers=workers)
        services.approvals = approvals
        flow.render_suggestions = lambda incident, suggestions: approval_blocks.suggestion_buttons(incident.id,
                                                                                                   suggestions)
    scheduler = None
    if settings.reminders and settings.channel:
        services.reminders = ReminderService(
            database=database, cluster=cluster, channel=settings.channel, outbox=outbox, incidents=incidents,
            open_incident=flow.open_incident, days=settings.reminder_days, timezone=ZoneInfo(settings.timezone))
        elector = None
        if settings.leader_election:
            elector = LeaderElector(cluster.client(), settings.lease_namespace,
                                    settings.pod_name or socket.gethostname())
            services.reminders.shared = LeaseLedger(elector)
        hour, minute = (int(part) for part in settings.reminder_time.split(":"))
        scheduler = CertificateScheduler(services.reminders, database.path, ZoneInfo(settings.timezone),
                                         (hour, minute), elector)
    bolt = build_bolt_app(services, web_client, executor)
    web = WebApp(bolt, metrics, Readiness(database, slack),
                 slack_events_over_http=bool(settings.slack_signing_secret))
    web.add_route("POST", "/alertmanager", alertmanager_route(flow, settings.alertmanager_token, metrics))
    return Meshbot(settings=settings, services=services, database=database, web=web, executor=executor,
                   outbox=outbox, incident_flow=flow, approvals=approvals, scheduler=scheduler)


def approval_policy(settings: Settings) -> ApprovalPolicy:
    if not settings.approvers:
        log.warning("MESHBOT_APPROVERS is empty: nobody can approve remediation actions")
    return ApprovalPolicy(approvers=settings.approvers, required=settings.required_approvals,
                          ttl=timedelta(minutes=settings.approval_ttl_minutes))


def _load_playbooks(settings: Settings) -> PlaybookSet:
    try:
        return load_playbooks(settings.playbooks_dir or DEFAULT_PLAYBOOKS_DIR)
    except PlaybookError as exc:
        raise SettingsError(f"invalid playbook: {exc}") from None
