"""The one module that talks HTTP to mesh endpoints (istiod, Envoy admin) via httpx."""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx

from commands.errors import AccessDenied, ClusterError, NotFound, TransientError, UserError

DEFAULT_TIMEOUT = 10.0
MAX_BODY_BYTES = 64 * 1024 * 1024


class HttpEndpoint:
    """A base URL answering GETs; every failure becomes a meshbot error naming the URL."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, client: httpx.Client | None = None,
                 bearer_token_file: str | None = None, max_body: int = MAX_BODY_BYTES,
                 bearer_token: str | None = None, ca_file: str | None = None, keep_client: bool = False):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_body = max_body
        """Bodies are read in chunks and refused past this size, so a runaway answer never sits in memory whole."""
        self._client = client
        self.bearer_token_file = bearer_token_file
        """Sent as ``Authorization: Bearer``; read at every request because projected tokens rotate."""
        self.bearer_token = bearer_token
        """A fixed token (e.g. a Prometheus behind an authenticating proxy); the file wins when both are set."""
        self.ca_file = ca_file
        """PEM bundle that verifies the server's certificate instead of the system's roots."""
        self.keep_client = keep_client
        """Keep one client (and its open connections) for every request; for an endpoint asked several questions
        in a row, like Prometheus in one diagnosis.  One httpx.Client is safe to share between threads."""
        self._client_lock = threading.Lock()

    def _headers(self) -> dict[str, str]:
        if not self.bearer_token_file:
            return {"Authorization": f"Bearer {self.bearer_token}"} if self.bearer_token else {}
        try:
            with open(self.bearer_token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise UserError(f"cannot read the token file {self.bearer_token_file}: {exc.strerror}") from None
        return {"Authorization": f"Bearer {token}"} if token else {}

    def get_text(self, path: str, params: Mapping[str, str] | None = None) -> str:
        url = f"{self.url}/{path.lstrip('/')}"
        headers = self._headers()
        client = self._kept_client() if self.keep_client or self._client is not None else self._new_client()
        try:
            with client.stream("GET", url, params=params, timeout=self.timeout, headers=headers) as response:
                _raise_for_status(response, url)
                body = self._capped_body(response, url)
                encoding = response.encoding or "utf-8"
        except httpx.TimeoutException:
            raise TransientError(f"no answer within {self.timeout:g}s", endpoint=url) from None
        except httpx.HTTPError as exc:
            raise TransientError(f"connection failed ({type(exc).__name__}: {exc})", endpoint=url) from None
        finally:
            if client is not self._client:
                client.close()
        return body.decode(encoding, errors="replace")

    def _kept_client(self) -> httpx.Client:
        # Two threads asking at once must not both build one and leave the loser's connections open.
        with self._client_lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self) -> httpx.Client:
        # With a context given, httpx builds none of its own (httpx/_config.py create_ssl_context): a client then
        # costs ~0.1 ms instead of the ~0.25 s of CPU that loading certifi's bundle takes for verify=True.
        return httpx.Client(trust_env=not is_loopback(self.url), verify=self.tls_context())

    def close(self) -> None:
        """Close the kept client (``keep_client``); a later request opens a new one."""
        with self._client_lock:
            if self._client is not None and self.keep_client:
                self._client.close()
                self._client = None

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context this endpoint's clients use: one per CA source and process, reused by every request."""
        trust_env = not is_loopback(self.url)
        if self.ca_file:
            try:
                return _CONTEXTS.verifying(("cafile", self.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise UserError(f"cannot read the CA file {self.ca_file}: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
        if urlsplit(self.url).scheme == "http" and not trust_env:
            # Plain http on loopback never speaks TLS: no proxy (trust_env is off) and redirects are not followed
            # (httpx.Client's default).  A context with no trusted roots costs nothing to build and fails closed.
            return _NO_TRUSTED_ROOTS
        return _CONTEXTS.verifying(_environment_ca_source() if trust_env else _CERTIFI)

    def _capped_body(self, response: httpx.Response, url: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_body:
                raise TransientError(f"answer larger than {self.max_body // 2**20 or self.max_body} "
                                     f"{'MiB' if self.max_body >= 2**20 else 'bytes'}; not read further",
                                     endpoint=url)
            chunks.append(chunk)
        return b"".join(chunks)

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        text = self.get_text(path, params)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise TransientError(f"answer is not JSON ({exc.msg} at line {exc.lineno})",
                                 endpoint=f"{self.url}{path}") from None


CaSource = tuple[str, str]
"""("cafile", path) or ("capath", directory): where a verifying context loads its trusted roots from."""

_CERTIFI: CaSource = ("cafile", certifi.where())
_NO_TRUSTED_ROOTS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
"""Verifies hostnames and chains (PROTOCOL_TLS_CLIENT's defaults) against no roots: every TLS handshake fails."""


def _environment_ca_source() -> CaSource:
    """The roots httpx's ``verify=True`` trusts when it honours the environment (httpx/_config.py
    create_ssl_context): SSL_CERT_FILE, else SSL_CERT_DIR, else certifi's bundle."""
    if os.environ.get("SSL_CERT_FILE"):
        return ("cafile", os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ("capath", os.environ["SSL_CERT_DIR"])
    return _CERTIFI


class TlsContexts:
    """Verifying contexts, one per CA source, rebuilt only when the file or directory changes on disk.

    A mounted CA Secret is updated in place when it rotates; the stamp (inode, size, mtime) notices that, as the
    context built for every request did before."""

    def __init__(self) -> None:
        self._built: dict[CaSource, tuple[tuple[int, int, int] | None, ssl.SSLContext]] = {}
        self._lock = threading.Lock()

    def verifying(self, source: CaSource) -> ssl.SSLContext:
        stamp = _stamp(source[1])
        with self._lock:
            built = self._built.get(source)
            if built is None or built[0] != stamp or stamp is None:
                kind, path = source
                context = ssl.create_default_context(cafile=path) if kind == "cafile" \
                    else ssl.create_default_context(capath=path)
                built = self._built[source] = (stamp, context)
            return built[1]


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None  # unreadable: building the context raises the error the caller reports
    return (status.st_ino, status.st_size, status.st_mtime_ns)


_CONTEXTS = TlsContexts()


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this host: the local end of a port-forward, never to be sent through a proxy.

    httpx honours HTTP_PROXY/HTTPS_PROXY/ALL_PROXY unless NO_PROXY lists the host; a corporate proxy
    cannot reach this pod's 127.0.0.1, so a loopback request sent to it fails (or reaches the proxy's own
    loopback).  Other URLs (istiod's Service) keep the environment's proxy settings, NO_PROXY included:
    docs/deployment.md says which hosts to list there.
    """
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raise_for_status(response: httpx.Response, url: str) -> None:
    status = response.status_code
    if status < 400:
        return
    reason = f"HTTP {status} {response.reason_phrase}".strip()
    if status in (401, 403):
        raise AccessDenied(f"{reason}", status=status, endpoint=url)
    if status == 404:
        raise NotFound(f"{reason}", status=status, endpoint=url)
    if status >= 500:
        raise TransientError(reason, endpoint=url)
    raise ClusterError(reason, status=status, endpoint=url)


def http_endpoint(url: str) -> HttpEndpoint:
    """Factory matching ``commands.cluster.endpoints.HttpFactory``."""
    return HttpEndpoint(url)
