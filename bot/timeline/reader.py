"""Where the bot's timeline comes from, decided once: the live cluster and Prometheus, or captured answers
(a scenario's ``timeline/`` folder beside its file, or the demo's ``examples/demo/timeline``), so the demo
needs no services."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from bot.cluster import ClusterAccess
from bot.settings import Settings
from commands.clients.prometheus import PrometheusClient
from commands.errors import MeshbotError
from commands.telemetry.timeline import Timeline, build_timeline, captured_timeline, live_timeline

log = logging.getLogger(__name__)

DEFAULT_SINCE = timedelta(minutes=30)
"""How far before the alert the window opens: Istio's sample alerts fire after a few minutes of errors, and the
onset rule needs a quiet baseline before them (docs/timeline.md, "The onset")."""
CAPTURES = "timeline"
"""The folder beside a scenario file holding its captured Prometheus answers and cluster objects."""
READERS = 4
"""Timelines read at once for incidents (each a few list calls and Prometheus queries, mostly waiting)."""
LIST_CALLS = 12
"""About how many Kubernetes list calls one timeline makes (the mesh kinds, ReplicaSets, Pods, Namespaces,
ConfigMaps, Events)."""
PROMETHEUS_QUESTIONS = 8
"""The questions one timeline asks Prometheus (one file each in examples/demo/timeline/prometheus)."""
CAPTURED_SLACK = timedelta(hours=2)
"""How far an alert's time may lie from the captures' moment and still be the window's centre."""


def prometheus_from(settings: Settings) -> PrometheusClient | None:
    """The Prometheus of MESHBOT_PROMETHEUS_URL with its token, CA and limits; None when none is set."""
    if not settings.prometheus_url:
        return None
    return PrometheusClient(settings.prometheus_url, timeout=settings.prometheus_timeout,
                            bearer_token=settings.prometheus_token, bearer_token_file=settings.prometheus_token_file,
                            ca_file=settings.prometheus_ca_file, max_series=settings.prometheus_max_series)


@dataclass
class TimelineReader:
    settings: Settings
    cluster: ClusterAccess
    clock: Callable[[], datetime]
    """What incidents are timed by: a scenario's moving clock, or the wall clock."""
    captures: Path | None = None
    """Captured answers to read instead of the cluster and Prometheus; a scenario's own folder by default."""
    _readers: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.captures is None and self.settings.scenario:
            self.captures = Path(self.settings.scenario).parent / CAPTURES
        # Its own threads, not the worker pool: a diagnosis on a worker waits for its timeline, and a pool whose
        # every worker waits on a task queued behind them would never run it.
        self._readers = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="timeline")

    def start(self, *, at: datetime, namespaces: Sequence[str],
              since: timedelta = DEFAULT_SINCE) -> Future[Timeline | None]:
        """``read_or_none`` in the background, so an incident's playbook and its timeline are read at once."""
        return self._readers.submit(self.read_or_none, at=at, namespaces=namespaces, since=since)

    @property
    def source(self) -> str:
        """Where the answers come from, in words for the messages."""
        if self.captures is not None:
            return "captured answers" if self.captures.is_dir() else "a scenario with no captured telemetry"
        return f"Prometheus {self.settings.prometheus_url}" if self.settings.prometheus_url else "no Prometheus"

    def now(self) -> datetime:
        return self.clock()

    def read(self, *, at: datetime, namespaces: Sequence[str], since: timedelta = DEFAULT_SINCE) -> Timeline:
        """The timeline around ``at`` (the alert's startsAt): from ``since`` before it to 5 minutes after.

        What cannot be read (RBAC, a slow Prometheus) is a finding inside the timeline, never an exception; a
        cluster that cannot be reached at all raises ``MeshbotError`` for the caller to say so."""
        istio_namespace = self.settings.istio_namespace
        if self.captures is not None:
            # Captured answers are frozen at their moment, like a scenario's findings: an alert that cannot
            # belong to it (hours away) is read at the moment itself.
            moment = self.clock()
            at = at if abs(at - moment) <= CAPTURED_SLACK else moment
            if not self.captures.is_dir():
                return build_timeline(at=at, since=since, namespaces=namespaces, istio_namespace=istio_namespace,
                                      prometheus=None, changes=(), events=())
            return captured_timeline(self.captures, at=at, since=since, namespaces=namespaces,
                                     istio_namespace=istio_namespace)
        prometheus = prometheus_from(self.settings)
        try:
            return live_timeline(self.cluster.client(), prometheus, at=at, since=since, namespaces=namespaces,
                                 istio_namespace=istio_namespace)
        finally:
            if prometheus is not None:
                prometheus.close()

    def budget(self) -> float:
        """Seconds a diagnosis waits for its timeline: every list call and Prometheus question at its timeout
        (a Prometheus that times out is asked nothing more, docs/timeline.md "Prometheus", so this is rare)."""
        return LIST_CALLS * self.settings.kube_timeout + PROMETHEUS_QUESTIONS * self.settings.prometheus_timeout

    def finished(self, pending: Future[Timeline | None]) -> Timeline | None:
        """The timeline ``start`` began, or None when it is not read within ``budget``: the diagnosis goes on
        without it rather than wait on a cluster that does not answer."""
        try:
            return pending.result(timeout=self.budget())
        except FutureTimeout:
            log.warning("the timeline was not read within %.0f s; the diagnosis goes on without it", self.budget())
            return None

    def read_or_none(self, *, at: datetime, namespaces: Sequence[str],
                     since: timedelta = DEFAULT_SINCE) -> Timeline | None:
        """``read``, or None (logged) when the cluster cannot be reached: an incident's diagnosis goes on without."""
        try:
            return self.read(at=at, namespaces=namespaces, since=since)
        except MeshbotError as exc:
            log.warning("no timeline for %s at %s: %s", ",".join(namespaces) or "all namespaces", at, exc)
            return None
