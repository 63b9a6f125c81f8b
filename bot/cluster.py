"""Where the bot's cluster data comes from, decided once from Settings: a live cluster or a scenario.

Diagnostics, actions and the reminder scheduler all ask this object, so the
Kubernetes client (and its connection pool) is built once and shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from bot.settings import Settings
from commands.thresholds import Thresholds
from commands.cluster.demo import Scenario, load_scenario
from commands.cluster.endpoints import EndpointResolver
from commands.clients.http import HttpEndpoint
from commands.clients.kube import KubeClient, KubePortForwarder
from commands.cluster.snapshot import SnapshotSource
from commands.cluster.sources.kube import KubeSource


@dataclass
class ClusterAccess:
    settings: Settings

    def __post_init__(self) -> None:
        self._client: KubeClient | None = None
        self._scenario: Scenario | None = None
        self._lock = threading.Lock()

    def scenario(self) -> Scenario:
        """The captured scenario, read and parsed once (it does not change while the bot runs)."""
        with self._lock:
            if self._scenario is None:
                self._scenario = load_scenario(self.settings.scenario)
                self._scenario_source = self._scenario.source()
            return self._scenario

    def client(self) -> KubeClient:
        """The shared Kubernetes client (built on first use, so a bad kubeconfig surfaces per request)."""
        with self._lock:
            if self._client is None:
                self._client = KubeClient.connect(self.settings.kubeconfig, self.settings.kube_context,
                                                  timeout=self.settings.kube_timeout)
            return self._client

    def source(self) -> SnapshotSource:
        """A fresh snapshot source per diagnosis (sources keep per-read state)."""
        if self.settings.scenario:
            self.scenario()
            return self._scenario_source
        return KubeSource(self.client(), istio_namespace=self.settings.istio_namespace,
                          read_ca_secrets=self.settings.read_ca_secrets, extra_secrets=self.settings.extra_secrets)

    def endpoints(self) -> EndpointResolver:
        if self.settings.scenario:
            return self.scenario().endpoints()
        client = self.client()
        timeout = self.settings.kube_timeout
        token_file = self.settings.istiod_token_file
        return EndpointResolver(
            http=lambda url: HttpEndpoint(url, timeout=timeout),
            istiod_urls=[self.settings.istiod_url] if self.settings.istiod_url else [],
            port_forwarder=KubePortForwarder(client),
            direct_pod_ips=client.is_in_cluster,
            # istiod answers /debug/* unauthenticated only to loopback (pilot/pkg/xds/debug.go), so it is reached
            # through a port-forward unless the operator opts into direct calls with a token istiod accepts.
            istiod_direct=self.settings.istiod_direct,
            istiod_http=lambda url: HttpEndpoint(url, timeout=timeout, bearer_token_file=token_file))

    def thresholds(self) -> Thresholds:
        return Thresholds()

    def now(self) -> datetime:
        """A scenario is frozen at its own moment; a live cluster is diagnosed as of now."""
        if self.settings.scenario:
            return self.scenario().now
        return datetime.now(timezone.utc)

    def incident_clock(self) -> Callable[[], datetime]:
        """What incidents are timed by: the scenario's moving clock for a scenario, else the wall clock."""
        if self.settings.scenario:
            return ScenarioClock(self.scenario().now).now
        return lambda: datetime.now(timezone.utc)


@dataclass(frozen=True)
class ScenarioClock:
    """A scenario's moment, moving on at the speed of real time from when the bot started, so incident times
    and the findings' "as of" agree in the demo and with MESHBOT_SCENARIO."""

    start: datetime
    started: float = field(default_factory=time.monotonic)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.started)
