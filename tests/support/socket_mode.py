"""A fake Slack Socket Mode endpoint: a real WebSocket server the bot's Socket Mode client connects to.

It plays Slack's side of https://docs.slack.dev/apis/events-api/using-socket-mode/:
``apps.connections.open`` (answered by ``FakeSlack``) hands out a one-time URL from
``issue_url()``; the client opens a WebSocket on it (RFC 6455, spoken by the
``websockets`` library, so a sloppy handshake or unmasked client frame fails here as
it would at Slack), receives ``hello``, and from then on tests ``push()`` envelopes
and ``wait_for_ack(envelope_id)`` for the ``{"envelope_id": …, "payload": …}`` the
client sends back.  Every connection's messages and how it ended are recorded.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlparse

try:
    from websockets.exceptions import ConnectionClosed
    from websockets.http11 import Request, Response
    from websockets.sync.server import Server, ServerConnection, serve
except ImportError as exc:  # pragma: no cover - a missing test dependency must say how to get it
    raise ImportError("the fake Slack Socket Mode server needs `websockets`: "
                      "pip install -e '.[test]' (or pip install 'websockets>=14')") from exc

APP_ID = "AMESHBOT"


@dataclass
class SocketConnection:
    """One client connection as Slack's end saw it."""

    ticket: str
    websocket: ServerConnection
    received: list[dict[str, Any]] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    closed_at: float | None = None
    """``time.monotonic()`` when the connection ended."""
    close_code: int | None = None
    """1000/1001 after a close handshake; 1006 when the client dropped TCP without a close frame."""


class FakeSocketMode:
    """Slack's Socket Mode WebSocket endpoint on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.connections: list[SocketConnection] = []
        self.rejected_tickets: list[str] = []
        self._tickets: set[str] = set()
        self._changed = threading.Condition()
        self._server: Server = serve(self._serve_connection, "127.0.0.1", 0, process_request=self._check_ticket,
                                     compression=None, ping_interval=None, close_timeout=1)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-socket-mode", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.socket.getsockname()[1]

    def issue_url(self, app_id: str = APP_ID) -> str:
        """A one-time ``ws://`` URL, as ``apps.connections.open`` returns ``wss://wss-primary.slack.com/link/…``."""
        ticket = str(uuid.uuid4())
        with self._changed:
            self._tickets.add(ticket)
        return f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={app_id}"

    # -- what tests do -------------------------------------------------------------

    def wait_for_connection(self, timeout: float = 5.0) -> SocketConnection:
        """The open connection (after ``hello`` was sent to it)."""
        return self._wait(lambda: next((c for c in self.connections if not c.closed.is_set()), None),
                          timeout, "a Socket Mode client to connect")

    def push(self, envelope_type: str, payload: dict[str, Any], *, accepts_response_payload: bool = True,
             envelope_id: str | None = None, retry_attempt: int | None = None) -> str:
        """Send an envelope to the connected client like Slack does; returns its envelope_id.

        Slack re-delivers an envelope it saw no ack for with the same ``envelope_id`` and ``retry_attempt``
        raised: pass both to play that."""
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope = {"envelope_id": envelope_id, "type": envelope_type, "payload": payload,
                    "accepts_response_payload": accepts_response_payload}
        if retry_attempt is not None:
            envelope.update(retry_attempt=retry_attempt, retry_reason="timeout")
        self.wait_for_connection().websocket.send(json.dumps(envelope))
        return envelope_id

    def wait_for_ack(self, envelope_id: str, timeout: float = 3.0) -> dict[str, Any]:
        """The message the client sent back for ``envelope_id`` (``{"envelope_id": …, "payload"?: …}``)."""
        return self._wait(lambda: next((m for m in self.received() if m.get("envelope_id") == envelope_id), None),
                          timeout, f"the ack of envelope {envelope_id}")

    def received(self) -> list[dict[str, Any]]:
        """Every message clients sent, over all connections."""
        with self._changed:
            return [m for c in self.connections for m in c.received]

    def wait_until_disconnected(self, timeout: float = 5.0) -> list[SocketConnection]:
        return self._wait(lambda: all(c.closed.is_set() for c in self.connections) and self.connections,
                          timeout, "every Socket Mode client to disconnect")

    def close(self) -> None:
        """Close open connections (1001 going away, as Slack does) and stop listening."""
        self._server.shutdown()
        self._thread.join(5)

    # -- Slack's side of the connection ----------------------------------------------

    def _check_ticket(self, websocket: ServerConnection, request: Request) -> Response | None:
        ticket = parse_qs(urlparse(request.path).query).get("ticket", [""])[0]
        with self._changed:
            if ticket in self._tickets:
                self._tickets.discard(ticket)  # a ticket opens one connection only
                return None
            self.rejected_tickets.append(ticket)
        return websocket.respond(HTTPStatus.UNAUTHORIZED, "invalid or used ticket\n")

    def _serve_connection(self, websocket: ServerConnection) -> None:
        ticket = parse_qs(urlparse(websocket.request.path).query).get("ticket", [""])[0]
        connection = SocketConnection(ticket=ticket, websocket=websocket)
        websocket.send(json.dumps({"type": "hello", "num_connections": 1,
                                   "debug_info": {"host": "applink-fake", "approximate_connection_time": 18060},
                                   "connection_info": {"app_id": APP_ID}}))
        with self._changed:
            self.connections.append(connection)
            self._changed.notify_all()
        try:
            for message in websocket:
                with self._changed:
                    connection.received.append(json.loads(message))
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                connection.close_code = websocket.close_code
                connection.closed_at = time.monotonic()
                connection.closed.set()
                self._changed.notify_all()

    def _wait(self, predicate, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (value := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                         f"received: {[m for c in self.connections for m in c.received]}")
                self._changed.wait(remaining)
            return value
