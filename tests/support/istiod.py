"""A stand-in for istiod's monitoring port (:15014) that refuses what the real one refuses.

Answers are programmed per path (``istiod_server.answer("/debug/syncz", [...])``).  Access is
decided as istiod does it:

* ``/debug/*`` (pilot/pkg/xds/debug.go ``allowAuthenticatedOrLocalhost``, since Istio 1.11,
  istio/istio#32903): a loopback caller is served; anyone else must authenticate or gets
  401 with an empty body.  Real istiod authenticates a client certificate or a Kubernetes
  service-account JWT (``Authorization: Bearer``, checked with a TokenReview for audience
  ``istio-ca``, security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go); the fake accepts
  the tokens it was given (token -> SPIFFE identity) and refuses every other one.
* With ``ENABLE_DEBUG_ENDPOINT_AUTH`` (default on since 1.27.6 / 1.28.4 / 1.29.0,
  istio/istio#58925) an authenticated caller outside the system namespace and
  ``DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES`` may read only config_dump/ndsz/edsz: anything
  else is 403 with an empty body (``AuthorizeDebugRequest``).
* ``/metrics``: open, unless ``METRICS_LOCALHOST_ACCESS_ONLY`` (pilot/pkg/bootstrap/monitoring.go),
  then a non-loopback caller gets 403 "Only requests from localhost are allowed".
* ``/version``: open.

Loopback is judged from the connection's source address, as istiod judges ``RemoteAddr``.
On one test machine every address in 127.0.0.0/8 is local, so the fake counts only
127.0.0.1 and ::1 as loopback (real istiod takes all of 127/8): a client that binds its
source to ``POD_NETWORK_SOURCE`` (127.0.0.2) stands for a caller from another pod.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.http_server import ProgrammableServer, Recorded, start_server

LOOPBACK = frozenset({"127.0.0.1", "::1"})
POD_NETWORK_SOURCE = "127.0.0.2"
"""Source address tests bind to look like a caller from another pod."""
SYSTEM_NAMESPACE = "istio-system"
NAMESPACE_DEBUGGERS = frozenset({"config_dump", "ndsz", "edsz"})
"""pilot/pkg/xds/debug.go ``activeNamespaceDebuggers``: what a non-system namespace may read."""
METRICS_REFUSAL = b"Only requests from localhost are allowed\n"
HEALTHY_METRICS = Path(__file__).resolve().parent.parent / "data" / "istiod-metrics" / "healthy.txt"


IstiodRequest = Recorded
"""A request the fake istiod saw, with the caller's address and the status it answered."""


@dataclass
class FakeIstiod(ProgrammableServer):
    """What the test programs and reads back; the server behind it applies istiod's access rules."""

    tokens: dict[str, str] = field(default_factory=dict)
    """Bearer token -> SPIFFE identity it authenticates as (istiod: TokenReview of a service-account JWT)."""
    debug_endpoint_auth: bool = True
    allowed_namespaces: frozenset[str] = frozenset()
    metrics_localhost_only: bool = False

    def __post_init__(self) -> None:
        # Real istiod always serves /metrics; a test that does not program it gets a healthy istiod's.
        self.answer("/metrics", HEALTHY_METRICS.read_text())

    def accept_token(self, token: str, identity: str) -> None:
        self.tokens[token] = identity

    # -- istiod's decisions -------------------------------------------------------------------------

    def refusal(self, path: str, client_ip: str, headers: Mapping[str, str]) -> tuple[int, bytes] | None:
        """(status, body) when istiod would refuse, else None."""
        if path == "/metrics" and self.metrics_localhost_only and client_ip not in LOOPBACK:
            return 403, METRICS_REFUSAL
        if not path.startswith("/debug/") or client_ip in LOOPBACK:
            return None
        identity = self._authenticated(headers)
        if identity is None:
            return 401, b""
        if self.debug_endpoint_auth and not self._authorized(identity, path):
            return 403, b""
        return None

    def _authenticated(self, headers: Mapping[str, str]) -> str | None:
        # security.ExtractRequestToken: "Bearer <jwt>" (or "Istio <jwt>") in the Authorization header.
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        for prefix in ("Bearer ", "Istio "):
            if value.startswith(prefix):
                return self.tokens.get(value.removeprefix(prefix))
        return None

    def _authorized(self, identity: str, path: str) -> bool:
        namespace = _spiffe_namespace(identity)
        if not namespace:
            return False
        if namespace == SYSTEM_NAMESPACE or namespace in self.allowed_namespaces:
            return True
        return path.removeprefix("/debug/") in NAMESPACE_DEBUGGERS


def _spiffe_namespace(identity: str) -> str:
    """``spiffe://cluster.local/ns/NS/sa/SA`` -> NS."""
    parts = identity.removeprefix("spiffe://").split("/")
    return parts[2] if len(parts) >= 5 and parts[1] == "ns" and parts[3] == "sa" else ""


def start_istiod(host: str = "127.0.0.1") -> tuple[FakeIstiod, ThreadingHTTPServer]:
    state = FakeIstiod(host=host)
    _, server = start_server(state)
    return state, server


@pytest.fixture
def istiod_server() -> Iterator[FakeIstiod]:
    """istiod's :15014 on a free port of 127.0.0.1; program with ``istiod_server.answer(path, body)``."""
    state, server = start_istiod()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def second_istiod() -> Iterator[ProgrammableServer]:
    """A second istiod (a canary revision, or another replica) on its own port."""
    state, server = start_server()
    yield state
    server.shutdown()
    server.server_close()


def istiod_pod_yaml(version: str = "1.22.3", *, pod_ip: str | None = None) -> str:
    """istiod's pod ``istio-system/istiod-1`` (YAML), Running, its discovery container on pilot ``version``."""
    status = f"{{phase: Running, podIP: {pod_ip}}}" if pod_ip else "{phase: Running}"
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: istiod-1, namespace: istio-system, labels: {{app: istiod}}}}
spec:
  containers: [{{name: discovery, image: "docker.io/istio/pilot:{version}"}}]
status: {status}
"""


def syncz_entry(proxy: str, *, version: str = "1.22.3", synced: bool = True, **fields: str) -> dict:
    """One SyncStatus entry; all four main xDS types synced unless ``fields`` say otherwise."""
    entry: dict = {"cluster_id": "Kubernetes", "proxy": proxy, "proxy_type": "sidecar", "istio_version": version}
    if synced:
        for prefix in ("cluster", "listener", "route", "endpoint"):
            entry[f"{prefix}_sent"] = entry[f"{prefix}_acked"] = f"{prefix}-nonce-1"
    entry.update(fields)
    return entry


def acknowledged_push(proxies: list[str], push: int) -> list[dict]:
    """``/debug/syncz`` after istiod's ``push``-th push to ``proxies``, each acknowledged: every main xDS type's
    sent and acked nonce is the new one (pilot/pkg/xds/debug.go SyncStatus), as meshbot's effect check reads it."""
    nonces = {f"{prefix}_{side}": f"{prefix}-nonce-{push}" for prefix in ("cluster", "listener", "route", "endpoint")
              for side in ("sent", "acked")}
    return [syncz_entry(proxy, **nonces) for proxy in proxies]


def push_after_every_write(kube, istiod: ProgrammableServer, proxies: list[str]) -> None:
    """istiod as it follows the API server: each stored write is pushed to ``proxies`` and acknowledged (new nonces
    in ``/debug/syncz``), so an execution's first look sees its push instead of waiting out the settle time
    (bot/approvals/verification.py SETTLE) for nonces a static answer never moves.  Only for tests whose writes
    are all mesh config (istiod pushes only when config it serves changes, pilot/pkg/xds/discovery.go ConfigUpdate)."""
    pushes = itertools.count(2)  # syncz_entry's answer is push 1
    kube.emulator.after_write.append(lambda request: istiod.answer("/debug/syncz",
                                                                   acknowledged_push(proxies, next(pushes))))
