"""The one module that calls the Slack Web API (slack_sdk), with retries and error mapping.

Every call retries on 429 (honouring ``Retry-After``), connection errors and
5xx through slack_sdk's retry handlers; failures that remain become
``SlackError`` with Slack's error code, and are counted per method for
``/metrics``.  ``SlackError.kind`` is the one place a failure is classified
(retry later, fix the token, invite the bot, or give up on this request).
Tokens never reach a log line: slack_sdk redacts the Authorization header and
``bot.logging`` scrubs anything else.
"""

from __future__ import annotations

import http.client
import io
import logging
import select
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError, SlackObjectFormationError, SlackRequestError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from commands.errors import MeshbotError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 15
SNIPPET_LIMIT = 1024 * 1024
"""Slack refuses a snippet longer than 1 MB (files.getUploadURLExternal: ``snippet_too_large``)."""


class SlackErrorKind(StrEnum):
    """What a failed call means for whoever made it."""

    TRANSIENT = "transient"
    """Try again later: rate-limited, Slack down, or no answer at all."""
    WORKSPACE = "workspace"
    """The token or the app's installation is refused: every call would fail alike until someone fixes it."""
    NOT_IN_CHANNEL = "not_in_channel"
    """meshbot cannot post in that channel (not invited, gone, archived): it will never accept this post."""
    PERMANENT = "permanent"
    """This request will never be accepted as it is (bad blocks, too long, the message is gone)."""


# ok:false codes, from the "Errors" tables of https://docs.slack.dev/reference/methods/chat.postMessage,
# chat.update and files.completeUploadExternal.  The token's or installation's: any call would get them.
WORKSPACE_ERRORS = frozenset({"invalid_auth", "account_inactive", "token_revoked", "token_expired", "not_authed",
                              "missing_scope", "team_access_not_granted"})
# The channel refuses meshbot; people can fix it with /invite.
NOT_IN_CHANNEL_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
# This message will never be accepted, even when the HTTP status says "server error".
PERMANENT_ERRORS = frozenset({
    "invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text", "message_not_found",
    "cant_update_message", "edit_window_closed", "restricted_action",
})
# "Try again later" although the HTTP status may be 200 (https://docs.slack.dev/apis/web-api/rate-limits).
TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})


def classify(error: str, *, transient: bool) -> SlackErrorKind:
    """Slack's error code (and whether the transport said "retry": 429, 5xx, no answer) as one kind.

    The code wins over the status: a 5xx carrying ``invalid_blocks`` is still a message Slack will refuse."""
    if error in WORKSPACE_ERRORS:
        return SlackErrorKind.WORKSPACE
    if error in NOT_IN_CHANNEL_ERRORS:
        return SlackErrorKind.NOT_IN_CHANNEL
    if error in PERMANENT_ERRORS:
        return SlackErrorKind.PERMANENT
    if transient or error in TRANSIENT_ERRORS:
        return SlackErrorKind.TRANSIENT
    return SlackErrorKind.PERMANENT


class SlackError(MeshbotError):
    """A Slack Web API call failed after retries; ``error`` is Slack's code (``not_in_channel``)."""

    def __init__(self, method: str, error: str, *, transient: bool = False, retry_after: float | None = None):
        self.method = method
        self.error = error
        self.transient = transient
        """The transport's verdict only (429, 5xx, no answer); ``kind`` also reads Slack's code."""
        self.retry_after = retry_after
        """Seconds Slack asked us to wait (429 Retry-After)."""
        super().__init__(f"Slack {method} failed: {error}")

    @property
    def kind(self) -> SlackErrorKind:
        return classify(self.error, transient=self.transient)


@dataclass(frozen=True)
class Posted:
    channel: str
    ts: str


ErrorCounter = Callable[[str, str], None]
"""(method, error) -> None: how failures reach ``/metrics``."""


class SlackConnections:
    """Kept-alive connections to Slack's Web API: one per thread and host, shared by meshbot's Web API clients, and
    all closed by ``close`` when meshbot stops (a connection is never used by two threads at once)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, int | None], *, timeout: float,
            context: ssl.SSLContext | None) -> http.client.HTTPConnection:
        mine: dict[tuple, http.client.HTTPConnection] = self._local.__dict__.setdefault("by_host", {})
        connection = mine.get(key)
        if connection is not None and connection.sock is not None and _closed_by_peer(connection.sock):
            connection.close()  # the server ended the idle connection: a new one, not a request into a dead one
        if connection is None:
            scheme, host, port = key
            connection = mine[key] = (
                http.client.HTTPSConnection(host, port, timeout=timeout, context=context or ssl.create_default_context())
                if scheme == "https" else http.client.HTTPConnection(host, port, timeout=timeout))
        connection.timeout = timeout  # each client's own (the readiness check's is shorter)
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        with self._lock:
            self._all.add(connection)  # again after a close(): http.client reopens a closed connection on use
        return connection

    def forget(self, key: tuple[str, str, int | None]) -> None:
        connection = self._local.__dict__.get("by_host", {}).pop(key, None)
        if connection is not None:
            connection.close()
            with self._lock:
                self._all.discard(connection)

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, set()
        for connection in connections:
            connection.close()


class KeepAliveWebClient(WebClient):
    """slack_sdk's WebClient over kept-alive connections (``SlackConnections``).

    slack_sdk sends every call through ``urllib.request.urlopen``, which opens a new TCP connection (and, to
    slack.com, a new TLS session) per call and closes it: on the ack bench the "Running…" post cost 1.8 ms of the
    serving process's CPU, most of it connecting, and against Slack each call also pays the handshake's round
    trips while the outbox sends one message after another.  Everything above the socket stays slack_sdk's: its
    retry handlers, 429 handling and error mapping see the same ``HTTPError``/``URLError`` urllib raises (the
    wrapping below follows ``urllib.request.AbstractHTTPHandler.do_open``).  A proxy (``proxy=``, or slack_sdk's
    reading of HTTPS_PROXY) keeps urllib.
    """

    def __init__(self, *args: Any, connections: SlackConnections | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.connections = connections or SlackConnections()

    def _perform_urllib_http_request_internal(self, url: str, req: urllib.request.Request) -> dict[str, Any]:
        parts = urllib.parse.urlsplit(url)
        if self.proxy is not None or parts.scheme not in ("http", "https") or not parts.hostname:
            return super()._perform_urllib_http_request_internal(url, req)  # type: ignore[no-any-return]
        key = (parts.scheme, parts.hostname, parts.port)
        connection = self.connections.get(key, timeout=self.timeout, context=self.ssl)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            try:
                connection.request(req.get_method(), path, body=req.data, headers=dict(req.header_items()))
            except OSError as exc:  # as urllib: a failure to send is a URLError (retried as a connection error)
                raise urllib.error.URLError(exc) from exc
            response = connection.getresponse()
            body = response.read()
        except BaseException:
            self.connections.forget(key)
            raise
        if response.will_close:
            self.connections.forget(key)
        if response.status >= 300:  # urllib raises these (Slack's API does not redirect)
            raise urllib.error.HTTPError(url, response.status, response.reason, response.headers, io.BytesIO(body))
        if response.headers.get_content_type() == "application/gzip":
            return {"status": response.status, "headers": response.headers, "body": body}
        return {"status": response.status, "headers": response.headers,
                "body": body.decode(response.headers.get_content_charset() or "utf-8")}


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle kept-alive connection that is readable has been closed (or broken) by the server."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def build_web_client(token: str | None, base_url: str, *, max_retries: int = 3, timeout: int = DEFAULT_TIMEOUT,
                     connections: SlackConnections | None = None) -> WebClient:
    """A WebClient that retries rate limits, connection errors and server errors, over kept-alive connections."""
    return KeepAliveWebClient(
        token=token, base_url=base_url, timeout=timeout, connections=connections,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=max_retries),
            ConnectionErrorRetryHandler(max_retry_count=max_retries),
            ServerErrorRetryHandler(max_retry_count=max_retries),
        ],
    )


class SlackClient:
    """The few Web API calls meshbot makes, as plain Python calls."""

    def __init__(self, web: WebClient, *, on_error: ErrorCounter | None = None):
        self.web = web
        self._on_error = on_error or (lambda method, error: None)

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            # chat.* take JSON bodies (nested blocks); the read methods take form fields.
            if method.startswith("chat."):
                response = self.web.api_call(method, json=_drop_none(kwargs))
            else:
                response = self.web.api_call(method, data=_drop_none(kwargs))
        except SlackApiError as exc:
            raise self._mapped(method, exc) from None
        except (SlackClientError, OSError) as exc:
            raise self._unanswered(method, exc) from None
        return dict(response.data) if isinstance(response.data, dict) else {}

    def _unanswered(self, method: str, exc: Exception) -> SlackError:
        """No answer from Slack: a request slack_sdk refuses to build will never work; anything else may."""
        if isinstance(exc, (SlackRequestError, SlackObjectFormationError)):
            log.warning("Slack %s: slack_sdk refused to send the request: %s", method, str(exc)[:300])
            self._on_error(method, "request_error")
            return SlackError(method, "request_error", transient=False)
        self._on_error(method, "connection_error")
        return SlackError(method, f"connection error ({type(exc).__name__})", transient=True)

    def _mapped(self, method: str, exc: SlackApiError) -> SlackError:
        status = exc.response.status_code
        error = str(exc.response.get("error") or f"HTTP {status}")
        retry_after = None
        if status == 429:
            headers = {str(k).lower(): v for k, v in (exc.response.headers or {}).items()}
            value = headers.get("retry-after", "1")
            try:
                retry_after = float(value[0] if isinstance(value, list) else value)
            except (TypeError, ValueError):
                retry_after = 1.0
        self._on_error(method, error)
        return SlackError(method, error, transient=status == 429 or status >= 500, retry_after=retry_after)

    def auth_test(self) -> dict[str, Any]:
        return self._call("auth.test")

    def post_message(self, channel: str, text: str, blocks: Sequence[dict] | None = None, *,
                     thread_ts: str | None = None) -> Posted:
        answer = self._call("chat.postMessage", channel=channel, text=text, blocks=list(blocks or []) or None,
                            thread_ts=thread_ts, unfurl_links=False, unfurl_media=False)
        return Posted(channel=answer.get("channel") or channel, ts=str(answer["ts"]))

    def update_message(self, channel: str, ts: str, text: str, blocks: Sequence[dict] | None = None) -> None:
        self._call("chat.update", channel=channel, ts=ts, text=text, blocks=list(blocks or []))

    def upload_text(self, channel: str, thread_ts: str | None, *, filename: str, title: str, content: str,
                    comment: str | None = None) -> str:
        """A text snippet in a thread (files.getUploadURLExternal + upload + completeUploadExternal); past Slack's
        1 MB for a snippet (``snippet_too_large``, files.getUploadURLExternal's errors) a plain text file."""
        snippet = "text" if len(content.encode()) <= SNIPPET_LIMIT else None
        return self._upload(channel=channel, thread_ts=thread_ts, filename=filename, title=title, content=content,
                            initial_comment=comment, snippet_type=snippet)

    def upload_image(self, channel: str, thread_ts: str | None, *, filename: str, title: str, content: bytes,
                     alt_text: str) -> str:
        """A picture (PNG bytes) in a thread, through the same three steps: files.getUploadURLExternal with its
        length and ``alt_txt`` (what a screen reader says; Slack caps it at 1,000 characters), the bytes POSTed
        to the returned upload URL, then files.completeUploadExternal with channel_id and thread_ts
        (https://docs.slack.dev/messaging/working-with-files#uploading_files)."""
        return self._upload(channel=channel, thread_ts=thread_ts, filename=filename, title=title, content=content,
                            alt_txt=alt_text[:1000])

    def _upload(self, **kwargs: Any) -> str:
        try:
            answer = self.web.files_upload_v2(**_drop_none(kwargs))
        except SlackApiError as exc:
            raise self._mapped("files.upload", exc) from None
        except (SlackClientError, OSError) as exc:
            raise self._unanswered("files.upload", exc) from None
        files = answer.get("files") or [{}]
        return str(files[0].get("id", ""))

    def usergroup_members(self, usergroup: str) -> list[str]:
        return list(self._call("usergroups.users.list", usergroup=usergroup).get("users") or [])


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
