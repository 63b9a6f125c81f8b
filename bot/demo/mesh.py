"""istiod and the sidecar's admin answers as the embedded cluster's state makes them, so remedies show an effect.

The scenario's captured answers never change, so after an approved fix nothing would move in them and
verification by effect could only say "not seen".  A real mesh reacts; this module does so for the demo, from
what the bot's actions write to the embedded cluster:

- istiod answers ``/debug/syncz`` only while its pod is Ready (an OOMKilled istiod answers nothing, as a
  port-forward to a pod that is not running fails).  While it answers, every proxy has acknowledged the
  current mesh configuration: its nonces follow the resourceVersions of the Istio objects, as istiod pushes
  each change and Envoy ACKs it (pilot/pkg/xds/debug.go SyncStatus; xDS "ACK/NACK").
- The sidecar's ``/stats`` counts more requests on every read.  Its failing upstream (the cluster with the
  most 503s in the capture) keeps failing at the story's 93 % until istiod is Ready *and* the namespace
  accepts and sends plaintext (a PERMISSIVE PeerAuthentication and a DestinationRule with tls DISABLE): the
  expired root breaks mTLS, so only plaintext, pushed by a serving istiod, gets the calls through.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from commands.clients.kube import KubeClient
from commands.cluster.demo import Scenario
from commands.cluster.endpoints import Endpoint, EndpointResolver
from commands.cluster.snapshot import Resource, Snapshot
from commands.errors import TransientError
from commands.resources.references import PodRef

CONFIG_KINDS = ("PeerAuthentication", "DestinationRule", "VirtualService", "AuthorizationPolicy", "Sidecar",
                "EnvoyFilter", "ServiceEntry")
ISTIO_NAMESPACE = "istio-system"
"""The scenario's (examples/demo/cluster)."""
REQUESTS_PER_READ = 100
BROKEN_ERRORS, FIXED_ERRORS = 93, 2
"""503s per hundred requests before and after the fix (the story's 93 %; a few in-flight failures after)."""
_COUNTER = re.compile(r"^(cluster\.(.+?)\.upstream_rq_(total|503|5xx)): (\d+)$", re.M)
_NONCE_FIELDS = ("cluster", "listener", "route", "endpoint")


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class DemoMesh:
    client: KubeClient
    scenario: Scenario
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _traffic: dict[str, list[int]] = field(default_factory=dict)
    """Failing cluster -> [requests, errors] on top of the captured counters."""

    def endpoints(self) -> EndpointResolver:
        captured = self.scenario.endpoints()
        return DemoEndpoints(http=captured.http, envoy_admin_urls=captured.envoy_admin_urls,
                             istiod_urls=captured.istiod_urls, mesh=self)

    # -- the cluster's state ---------------------------------------------------------------------------------

    def istiod_ready(self) -> bool:
        return any(_ready(p) for p in self.client.list("Pod", ISTIO_NAMESPACE, label_selector="app=istiod"))

    def config_generation(self) -> str:
        """A digest of every Istio object's resourceVersion: it changes with each change istiod would push."""
        versions = sorted(f"{kind}/{(o.get('metadata') or {}).get('namespace')}/{(o.get('metadata') or {}).get('name')}"
                          f"@{(o.get('metadata') or {}).get('resourceVersion')}"
                          for kind in CONFIG_KINDS for o in self.client.list(kind))
        return hashlib.sha256("\n".join(versions).encode()).hexdigest()[:12]

    def plaintext_in(self, namespace: str) -> bool:
        permissive = any(((p.get("spec") or {}).get("mtls") or {}).get("mode") == "PERMISSIVE"
                         and not (p.get("spec") or {}).get("selector")
                         for p in self.client.list("PeerAuthentication", namespace))
        disabled = any((((r.get("spec") or {}).get("trafficPolicy") or {}).get("tls") or {}).get("mode") == "DISABLE"
                       for r in self.client.list("DestinationRule", namespace))
        return permissive and disabled

    # -- answers ---------------------------------------------------------------------------------------------

    def syncz(self, captured: Any) -> Any:
        if not self.istiod_ready():
            raise TransientError("istiod is not Ready (OOMKilled): the connection to its port 15014 was refused",
                                 endpoint="demo://istiod")
        generation = self.config_generation()
        entries = []
        for entry in captured if isinstance(captured, list) else []:
            pushed = dict(entry)
            for prefix in _NONCE_FIELDS:
                pushed[f"{prefix}_sent"] = pushed[f"{prefix}_acked"] = f"{generation}-{prefix}"
            pushed.pop("resources", None)
            entries.append(pushed)
        return entries

    def stats(self, pod: PodRef, captured: str) -> str:
        counters = {(m.group(2), m.group(3)): int(m.group(4)) for m in _COUNTER.finditer(captured)}
        failing = max((cluster for cluster, kind in counters if kind == "503"),
                      key=lambda c: counters[(c, "503")], default=None)
        if failing is None:
            return captured
        fixed = self.istiod_ready() and self.plaintext_in(pod.namespace)
        with self._lock:
            added = self._traffic.setdefault(failing, [0, 0])
            added[0] += REQUESTS_PER_READ
            added[1] += FIXED_ERRORS if fixed else BROKEN_ERRORS
            requests, errors = added
        totals = {"total": counters[(failing, "total")] + requests, "503": counters[(failing, "503")] + errors,
                  "5xx": counters.get((failing, "5xx"), 0) + errors}

        def live(match: re.Match[str]) -> str:
            if match.group(2) != failing:
                return match.group(0)
            return f"{match.group(1)}: {totals[match.group(3)]}"
        return _COUNTER.sub(live, captured)


class _DemoIstiod:
    def __init__(self, mesh: DemoMesh, captured: Endpoint):
        self.mesh, self.captured, self.url = mesh, captured, "demo://istiod"

    def get_text(self, path: str) -> str:
        return self.captured.get_text(path)

    def get_json(self, path: str) -> Any:
        answer = self.captured.get_json(path)
        return self.mesh.syncz(answer) if path.startswith("/debug/syncz") else answer


class _DemoEnvoy:
    def __init__(self, mesh: DemoMesh, pod: PodRef, captured: Endpoint):
        self.mesh, self.pod, self.captured, self.url = mesh, pod, captured, captured.url

    def get_text(self, path: str) -> str:
        text = self.captured.get_text(path)
        return self.mesh.stats(self.pod, text) if path.split("?")[0] == "/stats" else text

    def get_json(self, path: str) -> Any:
        return self.captured.get_json(path)


@dataclass
class DemoEndpoints(EndpointResolver):
    """The scenario's captured endpoints, answered as the embedded cluster's state makes them."""

    mesh: DemoMesh | None = None

    @contextlib.contextmanager
    def open_istiod(self, target: str | Resource) -> Iterator[Endpoint]:
        with super().open_istiod(target) as captured:
            yield _DemoIstiod(self.mesh, captured) if self.mesh else captured

    @contextlib.contextmanager
    def open_envoy(self, target: PodRef, snapshot: Snapshot | None = None) -> Iterator[Endpoint]:
        with super().open_envoy(target, snapshot) as captured:
            yield _DemoEnvoy(self.mesh, target, captured) if self.mesh else captured
