"""HTTP endpoints inside the mesh (istiod :15014, Envoy admin :15000) and how to reach them.

Checks ask for an ``Endpoint`` and read paths from it; whether that is a live
URL, a ``kubectl port-forward`` opened by meshbot, or a directory of captured
answers (``examples/demo``) is decided here, once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Protocol

from commands.cluster.snapshot import Resource, Snapshot
from commands.errors import AccessDenied, TransientError, UserError
from commands.resources.references import PodRef
from commands.validation import validate_dns1123_label

ENVOY_ADMIN_PORT = 15000
ISTIOD_MONITORING_PORT = 15014


class Endpoint(Protocol):
    url: str

    def get_text(self, path: str) -> str: ...

    def get_json(self, path: str) -> Any: ...


class CaptureEndpoint:
    """Answers from files captured earlier: ``<dir>/<path with / replaced by _>``.

    ``/certs`` is read from ``certs.json``, ``/stats`` from ``stats.txt``,
    ``/debug/syncz`` from ``debug_syncz.json``; a single file answers every path.
    """

    def __init__(self, location: str | Path):
        self.location = Path(location)
        self.url = f"file://{self.location.resolve()}"

    def _file_for(self, path: str) -> Path:
        if self.location.is_file():
            return self.location
        stem = path.split("?")[0].strip("/").replace("/", "_") or "index"
        for suffix in (".json", ".txt", ""):
            candidate = self.location / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
        raise TransientError(f"no captured answer for {path} in {self.location}", endpoint=self.url)

    def get_text(self, path: str) -> str:
        try:
            return self._file_for(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TransientError(f"cannot read capture: {exc.strerror}", endpoint=self.url) from None

    def get_json(self, path: str) -> Any:
        try:
            return json.loads(self.get_text(path))
        except json.JSONDecodeError as exc:
            raise TransientError(f"captured answer for {path} is not JSON: {exc.msg}", endpoint=self.url) from None


class PortForwarder(Protocol):
    """Opens a local URL that reaches ``port`` on a pod (the Kubernetes port-forward API)."""

    def forward(self, pod: PodRef, port: int) -> ContextManager[str]: ...


HttpFactory = Callable[[str], Endpoint]
"""Builds an Endpoint for a base URL (``commands.clients.http.HttpEndpoint`` in production)."""

# Why istiod refuses, from its code.  pilot/pkg/xds/debug.go allowAuthenticatedOrLocalhost (Istio 1.11+,
# istio/istio#32903): /debug/* is served unauthenticated only to loopback callers; anyone else must present a
# client certificate or a service-account JWT istiod can verify (TokenReview, audience istio-ca), else 401.
# AuthorizeDebugRequest under ENABLE_DEBUG_ENDPOINT_AUTH (default on since 1.27.6, 1.28.4 and 1.29.0,
# istio/istio#58925): an authenticated caller outside the system namespace and
# DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES may read only config_dump, ndsz and edsz, else 403.
# pilot/pkg/bootstrap/monitoring.go: /metrics is 403 to non-loopback callers under METRICS_LOCALHOST_ACCESS_ONLY.
ISTIOD_REFUSED_UNAUTHENTICATED = (
    "istiod refused the debug request from a non-loopback address (pilot/pkg/xds/debug.go); meshbot reaches it "
    "through a port-forward \u2014 check RBAC pods/portforward in istio-system")
ISTIOD_REFUSED_NAMESPACE = (
    "istiod refused the authenticated debug request: with ENABLE_DEBUG_ENDPOINT_AUTH (on by default since "
    "Istio 1.27.6/1.28.4/1.29.0) callers outside istio-system may read only config_dump, ndsz and edsz "
    "(pilot/pkg/xds/debug.go AuthorizeDebugRequest) \u2014 add meshbot's namespace to istiod's "
    "DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES, or let meshbot use the port-forward")
ISTIOD_REFUSED_METRICS = (
    "istiod serves /metrics to loopback callers only (METRICS_LOCALHOST_ACCESS_ONLY, "
    "pilot/pkg/bootstrap/monitoring.go) \u2014 let meshbot use the port-forward")


class IstiodEndpoint:
    """An istiod endpoint whose refusals (401/403) say why istiod refused and what to change."""

    def __init__(self, inner: Endpoint, *, direct: bool):
        self._inner = inner
        self.url: str = getattr(inner, "url", "")
        self.direct = direct
        """True when reached on its own address (not through a port-forward, where requests arrive as loopback)."""

    def get_text(self, path: str) -> str:
        with self._explained(path):
            return self._inner.get_text(path)

    def get_json(self, path: str) -> Any:
        with self._explained(path):
            return self._inner.get_json(path)

    @contextlib.contextmanager
    def _explained(self, path: str) -> Iterator[None]:
        try:
            yield
        except AccessDenied as exc:
            why = _istiod_refusal(path, exc.status)
            if why is None:
                raise
            endpoint = getattr(exc, "endpoint", None) or self.url
            how = ("; reached directly: leave the istiod URL unset to use the port-forward, or give it a "
                   "service-account token istiod accepts" if self.direct else " (through the port-forward)")
            raise AccessDenied(f"{why} [HTTP {exc.status} from {endpoint}{how}]", status=exc.status,
                               endpoint=endpoint, reason=why) from None


def _istiod_refusal(path: str, status: int | None) -> str | None:
    if path.split("?")[0].startswith("/debug/"):
        return {401: ISTIOD_REFUSED_UNAUTHENTICATED, 403: ISTIOD_REFUSED_NAMESPACE}.get(status or 0)
    if path.split("?")[0] == "/metrics" and status == 403:
        return ISTIOD_REFUSED_METRICS
    return None


def parse_envoy_admin_option(value: str) -> tuple[PodRef, str]:
    """``NAMESPACE/POD=URL`` from ``--envoy-admin``."""
    target, sep, url = value.partition("=")
    namespace, slash, pod = target.partition("/")
    if not (sep and slash and url):
        raise UserError(f"--envoy-admin {value!r}: expected NAMESPACE/POD=URL")
    validate_dns1123_label(namespace, what="namespace")
    return PodRef(namespace, pod), url


@dataclass
class EndpointResolver:
    """Finds and opens istiod and Envoy admin endpoints for the checks."""

    http: HttpFactory
    envoy_admin_urls: Mapping[PodRef, str] = field(default_factory=dict)
    istiod_urls: list[str] = field(default_factory=list)
    port_forwarder: PortForwarder | None = None
    direct_pod_ips: bool = False
    """In-cluster: pod IPs are reachable.  Used for istiod only with ``istiod_direct``; never for Envoy admin:
    Istio binds it to 127.0.0.1 inside the pod, so only a port-forward (through the API server) reaches it."""
    istiod_direct: bool = False
    """Reach istiod pods on their pod IP instead of a port-forward.  istiod then sees a non-loopback caller
    and answers /debug/* only to one it can authenticate (``istiod_http`` must carry a token it accepts)."""
    istiod_http: HttpFactory | None = None
    """Builds direct istiod endpoints (explicit URLs and pod IPs), e.g. with a bearer token; default ``http``."""
    istiod_port: int = ISTIOD_MONITORING_PORT
    max_envoy_targets: int = 10
    focus_pods: tuple[PodRef, ...] = ()
    """When set (an alert names its pod), Envoy checks look at exactly these pods."""

    def _open_url(self, url: str) -> Endpoint:
        if url.startswith(("http://", "https://")):
            return self.http(url)
        return CaptureEndpoint(url.removeprefix("file://"))

    @contextlib.contextmanager
    def _open_pod(self, pod: Resource | PodRef, port: int, *, direct_http: HttpFactory | None = None
                  ) -> Iterator[Endpoint]:
        """Through a port-forward, or on the pod IP when ``direct_http`` is given and pod IPs are reachable."""
        ref = pod if isinstance(pod, PodRef) else PodRef.of(pod)
        ip = pod.status.get("podIP") if isinstance(pod, Resource) else None
        if direct_http is not None and self.direct_pod_ips and ip:
            yield direct_http(f"http://{ip}:{port}")
            return
        if self.port_forwarder is None:
            raise UserError(f"no way to reach pod {ref} port {port}: give its URL explicitly")
        with self.port_forwarder.forward(ref, port) as base_url:
            yield self.http(base_url)

    # -- Envoy ------------------------------------------------------------------

    def envoy_targets(self, snapshot: Snapshot, namespace: str | None) -> list[PodRef]:
        """Explicit ``--envoy-admin`` pods, else up to ``max_envoy_targets`` sidecars, troubled ones first."""
        if self.focus_pods:
            return [p for p in self.focus_pods if namespace is None or p.namespace == namespace]
        if self.envoy_admin_urls:
            return sorted(p for p in self.envoy_admin_urls if namespace is None or p.namespace == namespace)
        if self.port_forwarder is None:
            return []
        from commands.cluster.pods import has_sidecar, sidecar_trouble_score

        pods = [p for p in snapshot.of_kind("Pod", namespace) if has_sidecar(p)
                and p.status.get("phase") == "Running"]
        pods.sort(key=lambda p: (-sidecar_trouble_score(p), p.namespace or "", p.name))
        return [PodRef.of(p) for p in pods[: self.max_envoy_targets]]

    @contextlib.contextmanager
    def open_envoy(self, target: PodRef, snapshot: Snapshot | None = None) -> Iterator[Endpoint]:
        url = self.envoy_admin_urls.get(target)
        if url:
            yield self._open_url(url)
            return
        pod = snapshot.get("Pod", target.namespace, target.name) if snapshot else None
        with self._open_pod(pod or target, ENVOY_ADMIN_PORT) as endpoint:
            yield endpoint

    # -- istiod -----------------------------------------------------------------

    def istiod_targets(self, snapshot: Snapshot) -> list[str | Resource]:
        """Explicit URLs, else every running istiod pod (each holds part of the proxies)."""
        if self.istiod_urls:
            return list(self.istiod_urls)
        from commands.cluster.pods import is_istiod

        return [p for p in snapshot.of_kind("Pod", snapshot.istio_namespace)
                if is_istiod(p) and p.status.get("phase") == "Running"]

    @contextlib.contextmanager
    def open_istiod(self, target: str | Resource) -> Iterator[Endpoint]:
        """A port-forward to the pod's :15014 by default: istiod then sees a loopback caller, the only kind it
        serves /debug/* without authentication (pilot/pkg/xds/debug.go)."""
        direct_http = self.istiod_http or self.http
        if isinstance(target, str):
            if not target.startswith(("http://", "https://")):
                yield self._open_url(target)
                return
            yield IstiodEndpoint(direct_http(target), direct=True)
            return
        direct = self.istiod_direct and self.direct_pod_ips and bool(target.status.get("podIP"))
        with self._open_pod(target, self.istiod_port, direct_http=direct_http if direct else None) as endpoint:
            yield IstiodEndpoint(endpoint, direct=direct)
