"""The demo's one HTTP server: the console people use, and the Slack Web API the bot calls.

Routes:
  ``GET /``, ``/console.css``, ``/console.js``   the page (``bot.demo.page``)
  ``GET /console/state?user=U``                  the channel as U sees it, and the cluster panel (HTML)
  ``POST /console/command|click|alert``          JSON from the page: a ``/mesh`` command, a button, an alert
  ``POST /api/<method>``                         the Web API (``bot.demo.workspace``)
  ``POST /upload/<file>``, ``/response/<token>`` files upload v2 and response_url
  ``GET /files/<file>``                          an uploaded picture (the timeline's graph), shown inline

It listens on loopback only.  The console's POSTs must be ``application/json`` (a
cross-site form cannot send that without a CORS preflight, which is never granted)
and the ``Host`` header must be a loopback name (no DNS rebinding).  The page is
served with a Content-Security-Policy that allows only its own script and style.
"""

from __future__ import annotations

import html
import json
import logging
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bot.demo import render
from bot.demo.alerts import BY_KEY, CATALOGUE, AlertStatus
from bot.demo.page import SCRIPT, STYLE, page
from bot.demo.workspace import CHANNEL_NAME, PEOPLE, File, Message, SlackRefusal, Workspace

log = logging.getLogger(__name__)

MAX_BODY = 1_000_000
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

AlertSender = Callable[[str, AlertStatus], int]
"""(alert key, firing|resolved) -> HTTP status of the bot's /alertmanager answer."""
ClusterView = Callable[[], Iterable[Mapping[str, Any]]]
"""Every object stored in the embedded cluster."""


# -- rendering the channel ------------------------------------------------------------------


def _when(ts: str) -> str:
    return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%H:%M:%S")


def message_html(message: Message, names: render.Names, replies: list[Message] | None = None) -> str:
    info = {"ts": message.ts, "ephemeral": "1" if message.visible_to else ""}
    body = render.blocks(message.blocks, info, names) if message.blocks else render.mrkdwn(message.text, names)
    files = "".join(_file_html(f) for f in message.files)
    classes = "message ephemeral" if message.visible_to else "message"
    only = '<span class="only-you">Only visible to you</span> ' if message.visible_to else ""
    edited = ' <span class="edited">(edited)</span>' if message.edited else ""
    thread = ""
    if replies:
        inner = "".join(message_html(r, names) for r in replies)
        public = sum(1 for r in replies if r.visible_to is None)
        thread = (f'<div class="thread"><div class="thread-count">{public} '
                  f'{"reply" if public == 1 else "replies"}</div>{inner}</div>')
    return (f'<div class="{classes}" data-ts="{html.escape(message.ts, quote=True)}">{only}'
            f'<span class="who">{html.escape(names(message.user))}</span>'
            f'<span class="when">{_when(message.ts)}</span>{edited}'
            f'<div class="body">{body}{files}</div>{thread}</div>')


def _file_html(file: File) -> str:
    """A picture inline (served by ``GET /files/<id>`` from this origin, as the CSP's img-src allows), a text file
    folded like Slack's snippet preview."""
    title = html.escape(file.title or file.filename)
    if file.image:
        return (f'<figure class="file image"><img src="/files/{urllib.parse.quote(file.id)}" '
                f'alt="{html.escape(file.alt_text or file.title, quote=True)}"><figcaption>{title}</figcaption>'
                "</figure>")
    return f'<details class="file"><summary>\U0001f4c4 {title}</summary><pre>{html.escape(file.content)}</pre></details>'


def channel_html(messages: list[Message], names: render.Names) -> str:
    """Top-level messages in order, each with its thread underneath."""
    replies: dict[str, list[Message]] = {}
    for message in messages:
        if message.thread_ts and message.thread_ts != message.ts:
            replies.setdefault(message.thread_ts, []).append(message)
    tops = [m for m in messages if not m.thread_ts or m.thread_ts == m.ts or m.thread_ts not in
            {t.ts for t in messages}]
    if not tops:
        return ('<p class="only-you">Nothing here yet. Send an alert (top bar) or type '
                '<code>/mesh help</code> below.</p>')
    return "".join(message_html(m, names, replies.get(m.ts)) for m in tops)


# -- rendering the cluster panel --------------------------------------------------------------


def _pod_line(pod: Mapping[str, Any]) -> str:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), "?")
    problems = []
    for container in status.get("containerStatuses") or []:
        waiting = ((container.get("state") or {}).get("waiting") or {}).get("reason")
        last = ((container.get("lastState") or {}).get("terminated") or {}).get("reason")
        if waiting or last:
            problems.append(f"{container.get('name')}: {waiting or last}")
    sidecar = "sidecar" if "istio-proxy" in containers else "no sidecar"
    mark = '<span class="ok">Ready</span>' if ready == "True" else '<span class="bad">not Ready</span>'
    detail = html.escape("; ".join(problems))
    return (f"<tr><td>{html.escape(meta.get('namespace', ''))}/{html.escape(meta.get('name', ''))}</td>"
            f"<td>{mark}<br>{html.escape(sidecar)}{'<br>' + detail if detail else ''}</td></tr>")


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def cluster_html(objects: Iterable[Mapping[str, Any]]) -> str:
    """What the actions change, at a glance: pods (readiness, sidecar), mTLS policies, restarts."""
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(str(obj.get("kind")), []).append(obj)
    pods = "".join(_pod_line(p) for p in sorted(by_kind.get("Pod", []), key=_key))
    policies = []
    for kind in ("PeerAuthentication", "DestinationRule"):
        for obj in sorted(by_kind.get(kind, []), key=_key):
            meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
            mode = (spec.get("mtls") or {}).get("mode") or ((spec.get("trafficPolicy") or {}).get("tls") or {}).get(
                "mode") or ""
            new = ' class="new"' if str(meta.get("name", "")).startswith("meshbot-") else ""
            policies.append(f"<tr{new}><td>{kind}<br>{html.escape(meta.get('namespace', ''))}/"
                            f"{html.escape(meta.get('name', ''))}</td><td>{html.escape(mode)}</td></tr>")
    restarts = []
    for deployment in sorted(by_kind.get("Deployment", []), key=_key):
        meta = deployment.get("metadata") or {}
        template = (deployment.get("spec") or {}).get("template") or {}
        stamp = ((template.get("metadata") or {}).get("annotations") or {}).get("kubectl.kubernetes.io/restartedAt")
        inject = ((template.get("metadata") or {}).get("labels") or {}).get("sidecar.istio.io/inject")
        notes = ([f"restartedAt {stamp}"] if stamp else []) + ([f"inject={inject}"] if inject else [])
        if notes:
            restarts.append(f'<tr class="new"><td>{html.escape(meta.get("namespace", ""))}/'
                            f'{html.escape(meta.get("name", ""))}</td><td>{html.escape(", ".join(notes))}</td></tr>')
    return ("<h2>Embedded cluster</h2><h2>Pods</h2><table id=\"pods\">" + pods + "</table>"
            "<h2>mTLS policies</h2><table id=\"policies\">" + "".join(policies) + "</table>"
            + ("<h2>Changed Deployments</h2><table id=\"deployments\">" + "".join(restarts) + "</table>"
               if restarts else ""))


# -- the server ---------------------------------------------------------------------------------


@dataclass
class Console:
    workspace: Workspace
    send_alert: AlertSender
    cluster_objects: ClusterView

    def state(self, user: str) -> dict[str, Any]:
        if user not in self.workspace.people:
            raise SlackRefusal("unknown user")
        messages = self.workspace.visible_to(user)
        return {"version": self.workspace.version, "user": user,
                "channel": channel_html(messages, self.workspace.name_of),
                "cluster": cluster_html(self.cluster_objects())}

    def command(self, body: Mapping[str, Any]) -> None:
        user, text = str(body.get("user", "")), str(body.get("text", "")).strip()
        if user not in self.workspace.people:
            raise SlackRefusal("unknown user")
        command, _, rest = text.partition(" ")
        if command != "/mesh":
            rest = text  # typed without the command name
        self.workspace.slash_command(user, rest.strip())

    def click(self, body: Mapping[str, Any]) -> None:
        user = str(body.get("user", ""))
        if user not in self.workspace.people or not isinstance(body.get("action"), dict):
            raise SlackRefusal("unknown user or malformed click")
        self.workspace.click(user, str(body.get("ts", "")), body["action"])

    def alert(self, body: Mapping[str, Any]) -> int:
        key, state = str(body.get("key", "")), str(body.get("state", ""))
        if key not in BY_KEY or state not in {s.value for s in AlertStatus}:
            raise SlackRefusal("unknown alert")
        return self.send_alert(key, AlertStatus(state))


def _handler(console: Console) -> type[BaseHTTPRequestHandler]:
    workspace = console.workspace
    page_html = page(PEOPLE, CATALOGUE, CHANNEL_NAME).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "meshbot-demo"

        def _send(self, status: int, body: bytes, content_type: str, *, csp: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            if csp:
                self.send_header("Content-Security-Policy", CSP)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data).encode(), "application/json")

        def _loopback_host(self) -> bool:
            """A page on another site that rebinds its DNS name to 127.0.0.1 still sends its own Host."""
            host = urllib.parse.urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
            return host in LOOPBACK_HOSTS

        def _body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json(413, {"ok": False, "error": "too_large"})
                return None
            return self.rfile.read(length) if length else b""

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if not self._loopback_host():
                return self._json(421, {"error": "the console answers on loopback names only"})
            url = urllib.parse.urlparse(self.path)
            if url.path == "/":
                return self._send(200, page_html, "text/html; charset=utf-8", csp=True)
            if url.path == "/console.css":
                return self._send(200, STYLE.encode(), "text/css; charset=utf-8")
            if url.path == "/console.js":
                return self._send(200, SCRIPT.encode(), "text/javascript; charset=utf-8")
            if url.path.startswith("/files/"):
                shared = workspace.file(urllib.parse.unquote(url.path.removeprefix("/files/")))
                if shared is None or not shared.image:
                    return self._json(404, {"error": "not found"})
                return self._send(200, shared.image, "image/png")
            if url.path == "/console/state":
                user = urllib.parse.parse_qs(url.query).get("user", [""])[0]
                try:
                    return self._json(200, console.state(user))
                except SlackRefusal as exc:
                    return self._json(400, {"error": str(exc)})
            self._json(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            body = self._body()
            if body is None:
                return
            path = urllib.parse.urlparse(self.path).path
            if path.startswith("/api/"):
                return self._json(200, workspace.api(path.removeprefix("/api/"), self._api_args(body),
                                                     self.headers.get("Authorization", "")))
            if path.startswith("/upload/"):
                ok = workspace.upload(path.rsplit("/", 1)[1], body)
                return self._send(200 if ok else 404, b"OK" if ok else b"unknown upload", "text/plain")
            if path.startswith("/response/"):
                ok = workspace.respond(path.rsplit("/", 1)[1], json.loads(body or b"{}"))
                return self._send(200 if ok else 404, b"ok" if ok else b"expired_url", "text/plain")
            if path.startswith("/console/"):
                return self._console(path.removeprefix("/console/"), body)
            self._json(404, {"error": "not found"})

        def _console(self, action: str, body: bytes) -> None:
            if not self._loopback_host():
                return self._json(421, {"error": "the console answers on loopback names only"})
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                return self._json(415, {"error": "send JSON"})
            try:
                data = json.loads(body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("expected an object")
                if action == "command":
                    console.command(data)
                elif action == "click":
                    console.click(data)
                elif action == "alert":
                    status = console.alert(data)
                    if status != 200:
                        return self._json(502, {"error": f"meshbot answered the alert with HTTP {status}"})
                else:
                    return self._json(404, {"error": "not found"})
            except (ValueError, SlackRefusal) as exc:
                return self._json(400, {"error": str(exc)})
            except OSError as exc:  # the bot is not answering
                return self._json(502, {"error": f"meshbot is not answering ({type(exc).__name__})"})
            self._json(200, {"ok": True})

        def _api_args(self, body: bytes) -> dict[str, Any]:
            if "application/json" in (self.headers.get("Content-Type") or ""):
                data = json.loads(body or b"{}")
                return data if isinstance(data, dict) else {}
            args: dict[str, Any] = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), True).items()}
            for key in ("blocks", "attachments"):
                if isinstance(args.get(key), str):
                    args[key] = json.loads(args[key])
            return args

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("console: " + format, *args)

    return Handler


class QuietHTTPServer(ThreadingHTTPServer):
    """A browser tab that goes away mid-answer is no error: no traceback on stderr for it (issue 27)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # BrokenPipeError, ConnectionResetError, ConnectionAbortedError
            log.debug("console: %s went away (%s)", client_address, type(error).__name__)
            return
        log.exception("console: request from %s failed", client_address)


class ConsoleServer:
    """Serves ``Console`` and the workspace's Web API on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, console: Console, host: str = "127.0.0.1", port: int = 8080):
        self.server = QuietHTTPServer((host, port), _handler(console))
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="demo-console", daemon=True)

    def start(self) -> ConsoleServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()
