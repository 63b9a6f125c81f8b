"""The one module that talks HTTP to mesh endpoints (istiod, Envoy admin) via httpx."""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

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
        """Keep one client (its connections and loaded CA roots, ~0.2 s to build) for every request; for an
        endpoint asked several questions in a row, like Prometheus in one diagnosis."""

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
        if self._client is None and self.keep_client:
            self._client = self._new_client()
        client = self._client or self._new_client()
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

    def _new_client(self) -> httpx.Client:
        return httpx.Client(trust_env=not is_loopback(self.url), verify=self._verify())

    def close(self) -> None:
        """Close the kept client (``keep_client``); a later request opens a new one."""
        if self._client is not None and self.keep_client:
            self._client.close()
            self._client = None

    def _verify(self) -> ssl.SSLContext | bool:
        if not self.ca_file:
            return True
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"cannot read the CA file {self.ca_file}: {getattr(exc, 'strerror', None) or exc}") from None

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
