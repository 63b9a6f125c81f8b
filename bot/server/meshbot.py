"""``meshbot serve`` at run time: start the HTTP server, the background loops and Socket Mode; stop them.

What runs is built by ``bot.server.wiring.build``; this module only starts and
stops it, in dependency order (what produces work stops before what delivers it).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server

from bot.approvals.desk import ApprovalDesk
from bot.incidents.flow import IncidentFlow
from bot.slack.outbox import Outbox
from bot.reminders.scheduler import CertificateScheduler
from bot.server.http import MAX_BODY_BYTES, WebApp
from bot.server.services import Services
from bot.settings import Settings, SettingsError
from bot.slack.replays import ReplayGuard
from bot.storage.database import Database

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

log = logging.getLogger(__name__)

ENVELOPE_MEMORY_SECONDS = 10 * 60
"""Slack re-delivers an unacknowledged envelope (``retry_attempt``) like it retries Events API requests:
at once, after 1 minute and after 5 minutes (https://docs.slack.dev/apis/events-api/#retries)."""


@dataclass
class Meshbot:
    """Everything ``meshbot serve`` runs; tests build it with a fake Slack URL and port 0."""

    services: Services
    web: WebApp
    server: BaseWSGIServer | MultiSocketServer | None = field(default=None, init=False)
    socket_mode: SocketModeHandler | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _stopped: bool = field(default=False, init=False)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def database(self) -> Database:
        return self.services.database

    @property
    def outbox(self) -> Outbox:
        return self.services.outbox

    @property
    def incident_flow(self) -> IncidentFlow:
        return self.services.incident_flow

    @property
    def approvals(self) -> ApprovalDesk | None:
        return self.services.approvals

    @property
    def scheduler(self) -> CertificateScheduler | None:
        return self.services.scheduler

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.server.effective_port}"

    def start(self) -> Meshbot:
        """Bind the port (``settings.port``; 0 picks a free one) and serve in a background thread.

        A start that fails half-way (an approver quorum Slack's groups cannot meet, Socket Mode refused)
        stops whatever it had started before raising: no server thread or outbox is left running behind
        the error."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Meshbot:
        self.server = create_server(self.web, host=self.settings.host, port=self.settings.port,
                                    threads=self.settings.http_threads, max_request_body_size=MAX_BODY_BYTES,
                                    ident="meshbot", clear_untrusted_proxy_headers=True,
                                    asyncore_loop_timeout=self.settings.http_loop_seconds)
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()
        self.web.readiness.slack.start()
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

        self.socket_mode = _once_per_envelope(SocketModeHandler)(
            self.web.bolt, app_token=self.settings.slack_app_token, logger=logging.getLogger("meshbot.socket_mode"),
            seen=ReplayGuard(ENVELOPE_MEMORY_SECONDS),
            on_duplicate=lambda: self.services.metrics.duplicates.labels(transport="socket_mode").inc())
        try:
            self.socket_mode.connect()
        except SlackApiError as exc:
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

    @property
    def serving(self) -> bool:
        """The HTTP server thread is running."""
        return bool(self._thread and self._thread.is_alive())

    def wait(self) -> None:
        while self._thread and self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking requests, let running work finish within ``timeout`` seconds in all, close the database.

        ``timeout`` defaults to MESHBOT_SHUTDOWN_GRACE_SECONDS, which must stay below the pod's
        terminationGracePeriodSeconds (30 s by default) so the outbox is closed before the SIGKILL.  Work
        still running when it is up (a slow Kubernetes call) is abandoned: the caller should then exit
        without waiting for it.  Returns True when everything finished in time.  Idempotent.
        """
        if self._stopped:
            return True
        self._stopped = True
        deadline = time.monotonic() + (self.settings.shutdown_grace_seconds if timeout is None else timeout)

        def left() -> float:
            return max(deadline - time.monotonic(), 0.0)

        finished = True
        if self.socket_mode is not None:
            self._stop_socket_mode()
        if self.server is not None:
            self.server.close()
            # close() stops accepting; the request threads end only when the dispatcher is shut down.
            self.server.task_dispatcher.shutdown(cancel_pending=False, timeout=left())
            # waitress's loop runs while any connection is open, so one idle keep-alive connection (Alertmanager's
            # HTTP client keeps them) would hold the join below for the whole grace period.  Ask every connection
            # to close once its output is flushed, as waitress's own maintenance() does with idle ones; the loop
            # thread acts on it within asyncore_loop_timeout (MESHBOT_HTTP_LOOP_SECONDS) and ends when the last
            # one is gone.
            # (A MultiSocketServer, for a host with several addresses, has no such list: its close() closes all.)
            for channel in list(getattr(self.server, "active_channels", {}).values()):
                channel.will_close = True
        self.web.readiness.slack.stop(timeout=min(left(), 1.0))
        self.incident_flow.stop(left())
        if self.approvals:
            finished &= _within(left(), "approval sweeper", self.approvals.stop)
        if self.scheduler:
            finished &= _within(left(), "certificate scheduler", self.scheduler.stop)
        for name, pool in (("messenger", self.services.messengers), ("worker", self.services.workers)):
            finished &= _within(left(), f"{name} pool", _drain(pool))
        # Whatever is still queued stays in the database and is delivered after the next start.
        self.outbox.stop(left())
        if self._thread:
            self._thread.join(left())
        self.database.close()
        if not finished:
            log.warning("shutdown grace period over with work still running; it is abandoned (the incident log "
                        "and the outbox keep what was recorded)")
        return finished


def _drain(pool: ThreadPoolExecutor) -> Callable[[], None]:
    """Run what was submitted, start nothing new."""
    return lambda: pool.shutdown(wait=True, cancel_futures=True)


def _within(seconds: float, what: str, stop: Callable[[], Any]) -> bool:
    """Call ``stop`` but wait for it at most ``seconds``; False when it was still running then."""
    runner = threading.Thread(target=stop, name=f"stop-{what.replace(' ', '-')}", daemon=True)
    runner.start()
    runner.join(seconds)
    if runner.is_alive():
        log.warning("shutdown: the %s did not stop within the grace period", what)
        return False
    return True


def _once_per_envelope(handler_class: type) -> type:
    """Bolt's Socket Mode handler, acknowledging a re-delivered envelope (same envelope_id) without running it.

    Slack re-sends an envelope whose ack it did not get, with the same envelope_id and ``retry_attempt``
    raised; running it again would, for example, open a second approval request.
    """
    from slack_sdk.socket_mode.response import SocketModeResponse

    class OncePerEnvelope(handler_class):
        def __init__(self, *args: Any, seen: ReplayGuard, on_duplicate: Callable[[], None], **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._seen = seen
            self._on_duplicate = on_duplicate

        def handle(self, client: Any, req: Any) -> None:
            if req.envelope_id and not self._seen.first_time(req.envelope_id):
                log.info("Socket Mode envelope %s delivered again (retry_attempt %s): acknowledged, not run again",
                         req.envelope_id, getattr(req, "retry_attempt", None))
                client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
                self._on_duplicate()
                return
            super().handle(client, req)

    return OncePerEnvelope
