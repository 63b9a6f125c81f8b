"""A fake Slack for tests: the Web API over real HTTP, plus correctly signed inbound requests.

``FakeSlack`` answers like ``https://slack.com/api/`` (point ``SLACK_API_URL`` at
``fake_slack.api_url``), records every call with its parsed arguments, rejects
payloads Slack would reject (more than 50 blocks, section text over 3000
characters, header text over 150, no text and no blocks), and can be told to
fail: ``fail_next("chat.postMessage", status=429, retry_after=1)`` or
``fail_next("chat.postMessage", error="not_in_channel")``.  It also serves the
``response_url`` Slack gives slash commands and the upload URLs of
``files.getUploadURLExternal`` (on the fake's own port).  The upload flow is as strict as Slack's
(https://docs.slack.dev/reference/methods/files.getUploadURLExternal and files.completeUploadExternal):
``filename`` and ``length`` are required (``invalid_arguments``; a zero length is ``missing_argument``),
``alt_txt`` over 1,000 characters is ``alt_txt_too_large``, a snippet over 1 MB ``snippet_too_large``, a file
over ``max_upload_bytes`` ``file_upload_size_restricted``; the upload URL takes one POST of exactly the
declared length (anything else is HTTP 400, an unknown URL 404); completing needs ``files`` and uploaded
ids (``file_not_found``), a ``thread_ts`` needs a ``channel_id``, and a file is completed once.
Completed files are in ``files`` by id.  With the ``fake_socket_mode`` fixture it also
answers ``apps.connections.open`` (app-level ``xapp-`` tokens only) with the URL of
a fake Socket Mode WebSocket server (``tests/support/socket_mode.py``).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from bot.demo.signing import signed_headers
from tests.support import loopback

if TYPE_CHECKING:  # imported by the fixture only, so the HTTP fakes do not need `websockets`
    from tests.support.socket_mode import FakeSocketMode

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-test-0000000000-0000000000000-abcdefghijklmnopqrstuvwx"
BOT_USER = "UMESHBOT"
TEAM = "T0TEST"


@dataclass
class ApiCall:
    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass
class Failure:
    status: int = 200
    error: str | None = None
    retry_after: int | None = None


@dataclass(frozen=True)
class SharedFile:
    id: str
    filename: str
    title: str
    content: bytes
    channel: str | None
    thread_ts: str | None
    alt_txt: str | None
    snippet_type: str | None


SNIPPET_LIMIT = 1024 * 1024
MAX_ALT_TEXT = 1000


@dataclass
class FakeSlack:
    url: str = ""
    calls: list[ApiCall] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    """Bodies POSTed to response_url (ephemeral replies, ``respond()``)."""
    uploads: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, SharedFile] = field(default_factory=dict)
    """Files completed with files.completeUploadExternal, by id."""
    max_upload_bytes: int = 1024 ** 3
    """A workspace may restrict uploads below Slack's 1 GB per file."""
    _declared: dict[str, dict[str, Any]] = field(default_factory=dict)
    _failures: dict[str, list[Failure]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    down: bool = False
    """When True every Web API call answers 503 (Slack is down)."""
    before_answer: Callable[[str], None] | None = None
    """Called with the method name before each Web API answer (runs in the fake's request thread)."""
    socket_mode: FakeSocketMode | None = None
    """Where ``apps.connections.open`` sends clients; set by the ``fake_socket_mode`` fixture."""

    def answers_to(self, name: str) -> list[str]:
        """Texts sent to ``response_url(name)`` (ephemeral answers to one person's command or click)."""
        return [r.get("text", "") for r in self.responses if r.get("_to") == name]

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, name: str = "r1") -> str:
        return f"{self.url}/response/{name}"

    def fail_next(self, method: str, *, status: int = 200, error: str | None = None,
                  retry_after: int | None = None, times: int = 1) -> None:
        with self._lock:
            self._failures.setdefault(method, []).extend(
                [Failure(status, error, retry_after)] * times)

    def of(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def messages(self, *, thread_ts: str | None = None, top_level: bool = False) -> list[dict[str, Any]]:
        """Successful chat.postMessage arguments, optionally only one thread's or top-level ones."""
        posted = [c.args for c in self.of("chat.postMessage") if c.args.get("_ok")]
        if top_level:
            return [m for m in posted if not m.get("thread_ts")]
        if thread_ts is not None:
            return [m for m in posted if m.get("thread_ts") == thread_ts]
        return posted

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition") -> Any:
        """Poll until ``predicate()`` is truthy; the bot works in background threads."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; calls: "
                             f"{[c.method for c in self.calls]}")

    def stats(self) -> dict[str, int]:
        """Delivered messages by kind, for benchmarks that cannot read ``calls`` across processes."""
        ok = [c for c in self.calls if c.args.get("_ok")]
        gaps: dict[str, list[float]] = {}
        last: dict[str, float] = {}
        for call in ok:
            if call.method != "chat.postMessage":
                continue
            channel = call.args.get("channel", "")
            if channel in last:
                gaps.setdefault(channel, []).append(call.at - last[channel])
            last[channel] = call.at
        all_gaps = [g for values in gaps.values() for g in values]
        return {"min_post_gap_seconds": min(all_gaps) if all_gaps else None,
                "top_level": sum(1 for c in ok if c.method == "chat.postMessage" and not c.args.get("thread_ts")),
                "thread_replies": sum(1 for c in ok if c.method == "chat.postMessage" and c.args.get("thread_ts")),
                "updates": sum(1 for c in ok if c.method == "chat.update"), "calls": len(self.calls)}

    # -- answering -----------------------------------------------------------------

    def _take_failure(self, method: str) -> Failure | None:
        with self._lock:
            queue = self._failures.get(method)
            return queue.pop(0) if queue else None

    def answer(self, method: str, args: dict[str, Any],
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.before_answer:
            self.before_answer(method)
        if self.down:
            return 503, {"ok": False, "error": "service_unavailable"}, {}
        failure = self._take_failure(method)
        if failure and failure.status == 429:
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(failure.retry_after or 1)}
        if failure and failure.status >= 500:
            return failure.status, {"ok": False, "error": "internal_error"}, {}
        if failure and failure.error:
            return 200, {"ok": False, "error": failure.error}, {}
        problem = validate(method, args) or token_problem(method, headers or {})
        if problem:
            return 200, {"ok": False, "error": problem}, {}
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        return 200, {"ok": True, **handler(args)}, {}

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _auth_test(self, args: dict) -> dict:
        return {"url": "https://test.slack.com/", "team": "test", "user": "meshbot", "team_id": TEAM,
                "user_id": BOT_USER, "bot_id": "BMESHBOT"}

    def _chat_postMessage(self, args: dict) -> dict:
        ts = self._next_ts()
        return {"channel": args.get("channel"), "ts": ts, "message": {"ts": ts, "text": args.get("text")}}

    def _chat_update(self, args: dict) -> dict:
        return {"channel": args.get("channel"), "ts": args.get("ts"), "text": args.get("text")}

    def _chat_postEphemeral(self, args: dict) -> dict:
        return {"message_ts": self._next_ts()}

    def _files_getUploadURLExternal(self, args: dict) -> dict:
        if not args.get("filename") or str(args.get("length", "")).strip() == "":
            raise _SlackError("invalid_arguments")
        length = int(args["length"])
        if length <= 0:
            raise _SlackError("missing_argument")
        if len(str(args.get("alt_txt") or "")) > MAX_ALT_TEXT:
            raise _SlackError("alt_txt_too_large")
        if args.get("snippet_type") and length > SNIPPET_LIMIT:
            raise _SlackError("snippet_too_large")
        if length > self.max_upload_bytes:
            raise _SlackError("file_upload_size_restricted")
        file_id = f"F{next(self._ts):08d}"
        with self._lock:
            self._declared[file_id] = {"filename": str(args["filename"]), "length": length,
                                       "alt_txt": args.get("alt_txt"), "snippet_type": args.get("snippet_type")}
        return {"upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def receive_upload(self, file_id: str, body: bytes) -> int:
        """A POST to an upload URL: the HTTP status Slack's upload service would answer."""
        with self._lock:
            declared = self._declared.get(file_id)
            if declared is None or file_id in self.uploads:
                return 404
            if len(body) != declared["length"]:
                return 400
            self.uploads[file_id] = body
            return 200

    def _files_completeUploadExternal(self, args: dict) -> dict:
        files = args.get("files")
        files = json.loads(files) if isinstance(files, str) else files
        if not files:
            raise _SlackError("invalid_arguments")
        if args.get("thread_ts") and not (args.get("channel_id") or args.get("channels")):
            raise _SlackError("invalid_arguments")  # a reply must say in which channel's thread
        with self._lock:
            if any(f.get("id") not in self.uploads or f.get("id") in self.files for f in files):
                raise _SlackError("file_not_found")
            for f in files:
                declared = self._declared[f["id"]]
                self.files[f["id"]] = SharedFile(
                    id=f["id"], filename=declared["filename"], title=str(f.get("title") or declared["filename"]),
                    content=self.uploads[f["id"]], channel=args.get("channel_id"), thread_ts=args.get("thread_ts"),
                    alt_txt=declared["alt_txt"], snippet_type=declared["snippet_type"])
        return {"files": [{"id": f["id"], "title": f.get("title")} for f in files]}

    def _apps_connections_open(self, args: dict) -> dict:
        if self.socket_mode is None:
            raise _SlackError("socket_mode_not_started")  # the fake's own code: use the fake_socket_mode fixture
        return {"url": self.socket_mode.issue_url()}

    def _usergroups_users_list(self, args: dict) -> dict:
        return {"users": self.usergroups.get(args.get("usergroup"), [])}

    usergroups: dict[str, list[str]] = field(default_factory=dict)


class _SlackError(Exception):
    pass


def validate(method: str, args: dict[str, Any]) -> str | None:
    """The error Slack would answer for a malformed message, or None."""
    if method not in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
        return None
    if not args.get("channel"):
        return "channel_not_found"
    blocks = args.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if not args.get("text") and not blocks:
        return "no_text"
    if blocks:
        if len(blocks) > 50:
            return "invalid_blocks"
        for block in blocks:
            if block.get("type") == "header" and len(block["text"]["text"]) > 150:
                return "invalid_blocks"
            if block.get("type") == "section":
                texts = [block.get("text")] + list(block.get("fields") or [])
                if any(t and len(t.get("text", "")) > 3000 for t in texts):
                    return "invalid_blocks"
            if block.get("type") == "context" and len(block.get("elements") or []) > 10:
                return "invalid_blocks"
    if len(args.get("text") or "") > 40000:
        return "msg_too_long"
    return None


def token_problem(method: str, headers: dict[str, str]) -> str | None:
    """The error Slack answers when the token cannot call ``method`` (only checked where it matters here)."""
    if method != "apps.connections.open":
        return None
    authorization = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
    if not authorization.startswith("Bearer "):
        return "not_authed"
    if not authorization.removeprefix("Bearer ").startswith("xapp-"):
        return "not_allowed_token_type"  # Slack's answer to a bot or user token here
    return None


def _parse_body(handler: BaseHTTPRequestHandler, body: bytes) -> dict[str, Any]:
    content_type = handler.headers.get("Content-Type", "")
    if "application/json" in content_type:
        return json.loads(body or b"{}")
    parsed = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
    args: dict[str, Any] = {k: v[0] for k, v in parsed.items()}
    for key in ("blocks", "attachments"):
        if isinstance(args.get(key), str):
            args[key] = json.loads(args[key])
    return args


def start_fake_slack() -> tuple[FakeSlack, ThreadingHTTPServer]:
    state = FakeSlack()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body go out as two writes; with Nagle's algorithm on, the body waits for the client's
        # delayed ACK of the headers (40 ms on Linux) on every response of a kept-alive connection.  Slack's own
        # front ends answer without that stall.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urllib.parse.urlparse(self.path).path
            if path.startswith("/upload/"):
                status = state.receive_upload(path.rsplit("/", 1)[1], body)
                return self._send(status, f"OK - {len(body)}".encode() if status == 200 else b"", "text/plain")
            if path == "/_stats":  # for benchmarks running the fake in another process
                return self._send(200, json.dumps(state.stats()).encode(), "application/json")
            if path.startswith("/response/"):
                state.responses.append({**json.loads(body or b"{}"), "_to": path.rsplit("/", 1)[1]})
                return self._send(200, b"ok", "text/plain")
            method = path.removeprefix("/api/")
            args = _parse_body(self, body)
            try:
                status, answer, headers = state.answer(method, args, dict(self.headers))
            except _SlackError as exc:
                status, answer, headers = 200, {"ok": False, "error": str(exc)}, {}
            args["_ok"] = answer.get("ok", False)
            if status == 200 and answer.get("ts"):
                args["_ts"] = answer["ts"]
            state.calls.append(ApiCall(method, args, dict(self.headers), time.monotonic()))
            self._send(status, json.dumps(answer).encode(), "application/json", headers)

        do_GET = do_POST

        def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return state, server


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    state, server = start_fake_slack()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_socket_mode(fake_slack: FakeSlack) -> Iterator[FakeSocketMode]:
    """Slack's Socket Mode endpoint; ``fake_slack``'s ``apps.connections.open`` points clients at it.

    Ask for it before starting the bot so the bot is stopped first and does not reconnect.
    """
    from tests.support.socket_mode import FakeSocketMode

    server = FakeSocketMode()
    fake_slack.socket_mode = server
    yield server
    fake_slack.socket_mode = None
    server.close()


# -- requests from Slack into the bot ----------------------------------------------------

def sign(body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends: ``v0=HMAC-SHA256(secret, "v0:{ts}:{body}")`` (one source with the demo's Slack)."""
    return signed_headers(secret, body, timestamp=timestamp)


def slash_command_body(text: str, *, user_id: str = "UALICE", channel_id: str = "CINCIDENT",
                       response_url: str = "http://127.0.0.1:9/response", command: str = "/mesh") -> bytes:
    return urllib.parse.urlencode({
        "token": "deprecated-verification-token", "team_id": TEAM, "team_domain": "test",
        "channel_id": channel_id, "channel_name": "incidents", "user_id": user_id, "user_name": user_id.lower(),
        "command": command, "text": text, "api_app_id": "AMESHBOT", "is_enterprise_install": "false",
        "response_url": response_url, "trigger_id": "13345224609.738474920.8088930838d88f008e0",
    }).encode()


def block_action_body(action_id: str, value: str, *, user_id: str = "UBOB", channel_id: str = "CINCIDENT",
                      message_ts: str = "1.000001", response_url: str = "http://127.0.0.1:9/response") -> bytes:
    payload = {
        "type": "block_actions", "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM},
        "api_app_id": "AMESHBOT", "token": "deprecated", "trigger_id": "1.2.3",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": False},
        "channel": {"id": channel_id, "name": "incidents"},
        "message": {"type": "message", "ts": message_ts, "text": "", "user": BOT_USER},
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b1", "value": value,
                     "action_ts": f"{time.time():.6f}", "text": {"type": "plain_text", "text": "x"}}],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def post_signed(url: str, body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None,
                headers: dict[str, str] | None = None, timeout: float = 10.0) -> httpx.Response:
    """POST ``body`` to the bot exactly as Slack would, signed with ``secret``."""
    all_headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body, secret=secret,
                                                                                timestamp=timestamp)}
    all_headers.update(headers or {})
    return loopback.post(url, content=body, headers=all_headers, timeout=timeout)
