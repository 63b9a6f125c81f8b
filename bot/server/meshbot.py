"""``meshbot serve`` at run time: start the HTTP server, the background loops and Socket Mode; stop them.

What runs is built by ``bot.server.wiring.build``; this module only starts and
stops it, in dependency order (what produces work stops before what delivers it).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server

from bot.approvals.desk import ApprovalDesk
from bot.incidents.flow import IncidentFlow
from bot.incidents.outbox import Outbox
from bot.reminders.scheduler import CertificateScheduler
from bot.server.http import MAX_BODY_BYTES, WebApp
from bot.server.services import Services
from bot.settings import Settings, SettingsError
from bot.storage.database import Database

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

log = logging.getLogger(__name__)


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

        self.socket_mode = SocketModeHandler(self.web.bolt, app_token=self.settings.slack_app_token,
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
        self.services.messengers.shutdown(wait=True, cancel_futures=False)
        self.services.workers.shutdown(wait=True, cancel_futures=False)
        # Whatever is still queued stays in the database and is delivered after the next start.
        self.outbox.stop(timeout)
        if self._thread:
            self._thread.join(timeout)
        self.database.close()
