"""Where the bot's cluster data comes from, decided once from Settings: a live cluster or a scenario.

Diagnostics, actions and the reminder scheduler all ask this object, so the
Kubernetes client (and its connection pool) is built once and shared, and so is
``ClusterView``: one view of the cluster for every concurrent diagnosis (issue 26).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from bot.settings import DEFAULT_CLUSTER_REUSE_SECONDS, Settings
from commands.clients.http import HttpEndpoint
from commands.clients.kube import (
    WATCH_SECONDS,
    Closable,
    Keep,
    KubeClient,
    KubePortForwarder,
    Listing,
    ResourceExpired,
)
from commands.cluster.demo import Scenario, load_scenario
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import SnapshotSource
from commands.cluster.sources.kube import NAMESPACE_SCOPED_READS, KubeSource
from commands.errors import MeshbotError
from commands.resources.kinds import KindInfo, kind_info
from commands.thresholds import Thresholds

log = logging.getLogger(__name__)

FRESH_SECONDS = DEFAULT_CLUSTER_REUSE_SECONDS
"""The reuse window when none is given (MESHBOT_CLUSTER_REUSE_SECONDS; bot/settings.py says why)."""


class ClusterView:
    """One read of the cluster shared by every diagnosis: reads are coalesced, mesh-wide configuration is watched.

    Two kinds of read, because they cost differently:

    - Mesh-wide configuration (Services, Istio's kinds, Namespaces, webhooks; any cluster-wide read of a kind not
      in ``NAMESPACE_SCOPED_READS``) is listed once and then kept current by a watch with bookmarks, re-listed when
      the API server answers 410 Gone, as client-go's reflector does (tools/cache/reflector.go).  It is a few
      thousand small objects, every diagnosis needs all of it, and a warm diagnosis then lists none of it.
    - Pod-sized reads (a namespace's pods, Events, metrics; a whole-mesh pod list) are not kept: an identical read
      in flight is joined (single flight) and its answer serves further diagnoses for ``fresh_seconds``, then is
      dropped, so memory follows the diagnoses running, not the size of the cluster.

    Objects are shared between the snapshots of concurrent diagnoses: checks read them and never change them.
    """

    def __init__(self, client: KubeClient, *, fresh_seconds: float = FRESH_SECONDS,
                 watch_seconds: int = WATCH_SECONDS):
        self.client = client
        self.fresh_seconds = fresh_seconds
        self.watch_seconds = watch_seconds
        """How long one watch runs before it is opened again from the last resourceVersion (server-side timeout)."""
        self._lock = threading.Lock()
        self._reads: dict[tuple, _Read] = {}
        self._streams: set[Closable] = set()
        """Open watch streams, shut down by ``close`` (each watch thread drops its own when it ends)."""
        self._closed = threading.Event()

    def read_list(self, kind: str | KindInfo, namespace: str | None = None, *, field_selector: str | None = None,
                  label_selector: str | None = None, keep: Keep | None = None) -> Listing:
        info = kind if isinstance(kind, KindInfo) else kind_info(kind)
        key = (info.kind, namespace, field_selector or "", label_selector or "")
        with self._lock:
            now = time.monotonic()
            for stale in [k for k, r in self._reads.items() if not r.watched and r.expired(now)]:
                del self._reads[stale]
            read = self._reads.get(key)
            owner = read is None
            if read is None:
                watched = namespace is None and info.kind not in NAMESPACE_SCOPED_READS
                read = self._reads[key] = _Read(watched=watched, fresh_until=now + self.fresh_seconds)
        if not owner:
            return read.wait()
        try:
            listing = self.client.read_list(info, namespace, field_selector=field_selector,
                                            label_selector=label_selector, keep=keep)
        except BaseException as exc:
            with self._lock:
                self._reads.pop(key, None)  # a failed read is not remembered: the next diagnosis asks again
            read.fail(exc)
            raise
        read.fill(listing)
        if read.watched and not self._closed.is_set():
            threading.Thread(target=self._watch, args=(key, info, read, keep), name=f"watch-{info.plural}",
                             daemon=True).start()
        return read.wait()

    def close(self) -> None:
        """Stop keeping watched reads current: every open watch stream is shut down now, not at its next event
        (an idle watch would otherwise hold its connection for up to ``watch_seconds``)."""
        self._closed.set()
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            with contextlib.suppress(Exception):  # already closed by its own thread: nothing left to end
                stream.shutdown()

    def _opened(self, stream: Closable, opened: list[Closable]) -> None:
        with self._lock:
            for done in opened:  # the previous stream of this watch has ended
                self._streams.discard(done)
            opened[:] = [stream]
            self._streams.add(stream)
        if self._closed.is_set():
            stream.shutdown()

    def _watch(self, key: tuple, info: KindInfo, read: _Read, keep: Keep | None) -> None:
        _, namespace, fields, labels = key
        opened: list[Closable] = []
        try:
            while not self._closed.is_set():
                try:
                    for event in self.client.watch(info, namespace, resource_version=read.resource_version,
                                                   field_selector=fields or None, label_selector=labels or None,
                                                   timeout_seconds=self.watch_seconds,
                                                   on_open=lambda stream: self._opened(stream, opened)):
                        if self._closed.is_set():
                            return
                        read.apply(event.type, event.object, event.resource_version, keep)
                except ResourceExpired:
                    # Our resourceVersion is older than the API server's history: list again (reflector.go).
                    read.replace(self.client.read_list(info, namespace, field_selector=fields or None,
                                                       label_selector=labels or None, keep=keep))
        except MeshbotError as exc:
            log.info("no longer watching %s (%s); the next diagnosis lists them again", info.resource, exc)
        finally:
            with self._lock:
                self._streams.difference_update(opened)
                if self._reads.get(key) is read:
                    del self._reads[key]


class _Read:
    """One list shared by everyone who asked for it; a watched one is kept current by ``apply``."""

    def __init__(self, *, watched: bool, fresh_until: float):
        self.watched = watched
        self.fresh_until = fresh_until
        self.resource_version = ""
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._error: BaseException | None = None

    def expired(self, now: float) -> bool:
        return self._ready.is_set() and now >= self.fresh_until

    def fill(self, listing: Listing) -> None:
        self.replace(listing)
        self._ready.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._ready.set()

    def replace(self, listing: Listing) -> None:
        objects = {_object_key(item): item for item in listing.items}
        with self._lock:
            self._objects, self.resource_version = objects, listing.resource_version

    def apply(self, event_type: str, obj: dict[str, Any], resource_version: str, keep: Keep | None) -> None:
        with self._lock:
            if event_type == "DELETED":
                self._objects.pop(_object_key(obj), None)
            elif event_type in ("ADDED", "MODIFIED"):
                kept = keep(obj) if keep else obj
                if kept is not None:
                    self._objects[_object_key(obj)] = kept
            self.resource_version = resource_version or self.resource_version

    def wait(self) -> Listing:
        self._ready.wait()
        if self._error is not None:
            raise self._error
        with self._lock:
            return Listing(items=list(self._objects.values()), resource_version=self.resource_version)


def _object_key(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


@dataclass
class ClusterAccess:
    settings: Settings

    def __post_init__(self) -> None:
        self._client: KubeClient | None = None
        self._view: ClusterView | None = None
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

    def view(self) -> ClusterView:
        """The one view of the cluster every diagnosis reads through (coalesced reads, watched configuration)."""
        client = self.client()
        with self._lock:
            if self._view is None:
                self._view = ClusterView(client, fresh_seconds=self.settings.cluster_reuse_seconds)
            return self._view

    def source(self, namespace: str | None = None) -> SnapshotSource:
        """A fresh snapshot source per diagnosis (sources keep per-read state), reading through the shared view;
        ``namespace`` scopes the pod-sized reads to it (and the Istio namespace)."""
        if self.settings.scenario:
            self.scenario()
            return self._scenario_source
        return KubeSource(self.client(), istio_namespace=self.settings.istio_namespace,
                          read_ca_secrets=self.settings.read_ca_secrets, extra_secrets=self.settings.extra_secrets,
                          namespace=namespace, reads=self.view())

    def close(self) -> None:
        """Stop the shared view's watches."""
        with self._lock:
            view = self._view
        if view is not None:
            view.close()

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
