"""The ``envoy`` check: circuit breakers, 503s, retries, memory and stats count from sidecar admin APIs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from commands import codes
from commands.checks.registry import CheckContext, check
from commands.thresholds import Thresholds
from commands.resources.references import PodRef
from commands.errors import MeshbotError
from commands.findings import Finding, Remediation
from commands.cluster.pods import owner_deployment
from commands.cluster.quantity import human_bytes
from commands.cluster.snapshot import Snapshot

STATS_PATH = "/stats"
MEMORY_PATH = "/memory"
MIB = 2**20

# Circuit-breaker gauges (cluster.NAME.circuit_breakers.PRIORITY.GAUGE): 1 means the breaker "is at capacity
# and no longer admitting", 0 "under its concurrency limit" -- envoyproxy/envoy
# docs/root/configuration/upstream/cluster_manager/cluster_stats.rst, "Circuit breakers statistics".
# At capacity is not the same as rejecting: one idle keep-alive connection under max_connections: 1 holds
# cx_open at 1 while every request still goes through. Only the *_overflow counters below count refusals.
CONNECTION_BREAKERS = ("cx_open",)
REQUEST_BREAKERS = ("rq_open", "rq_pending_open", "rq_retry_open", "cx_pool_open")
BREAKERS = tuple(f"{priority}.{name}" for priority in ("default", "high")
                 for name in CONNECTION_BREAKERS + REQUEST_BREAKERS)


@dataclass(frozen=True)
class Overflow:
    """An Envoy counter that grows each time a circuit breaker refused something."""

    counter: str
    limit: str
    """The Envoy threshold, and the DestinationRule connectionPool field Istio sets it from
    (istio/istio pilot/pkg/networking/core/cluster_traffic_policy.go, applyConnectionPool)."""
    rejects_requests: bool
    """True when the refused thing is a request that got a local 503 instead of an upstream answer."""


# Meanings from envoyproxy/envoy docs/root/intro/arch_overview/upstream/circuit_breaking.rst and
# cluster_stats.rst; who answers what from source/common/conn_pool/conn_pool_base.cc (newStream,
# attachStreamToClient, tryCreateNewConnection) and source/common/router/router.cc.
OVERFLOWS = (
    # No room in the pending queue (and, before Envoy 1.38, no room under max_requests): the router
    # answers 503 with response flag UO.
    Overflow("upstream_rq_pending_overflow", "max_pending_requests (http1MaxPendingRequests)", True),
    # Envoy 1.38+ counts max_requests refusals here instead of in upstream_rq_pending_overflow (runtime
    # envoy.reloadable_features.skip_pending_overflow_count_on_active_rq, default true; set to false it
    # counts both, and this check then counts those refusals twice).
    Overflow("upstream_rq_active_overflow", "max_requests (http2MaxRequests)", True),
    # No new connection pool (conn_pool_map_impl.h getPool): the router sends "no healthy upstream", a 503
    # charged to upstream_rq_503.
    Overflow("upstream_cx_pool_overflow", "max_connection_pools", True),
    # No new connection: tryCreateNewConnection counts it and the request stays queued as pending, so it
    # waits rather than fails (it fails only if the pending queue is full too, counted above).
    Overflow("upstream_cx_overflow", "max_connections (tcp.maxConnections)", False),
    # The retry is skipped and the caller gets the failed attempt's answer.
    Overflow("upstream_rq_retry_overflow", "max_retries (http.maxRetries) or the retry budget", False),
)
_OVERFLOW_BY_COUNTER = {o.counter: o for o in OVERFLOWS}
_BREAKER_INFIX = ".circuit_breakers."
_COUNTERS = ("upstream_rq_total", "upstream_rq_503", "upstream_rq_retry") + tuple(o.counter for o in OVERFLOWS)
_WANTED_SUFFIXES = tuple(f".{c}" for c in _COUNTERS) + tuple(f"{_BREAKER_INFIX}{b}" for b in BREAKERS)
_ACTIVE_CLUSTERS = "cluster_manager.active_clusters"
CONTROL_PLANE_CLUSTERS = frozenset({"xds-grpc"})
"""Istio's bootstrap cluster to istiod, whose stats Istio always exports (istio/istio pkg/bootstrap/config.go,
requiredEnvoyStatsMatcherInclusionPrefixes): it says nothing about whether service clusters are exported."""
STATS_INCLUSION_REGEX = (r"cluster\.outbound\|.*\.(upstream_rq_(total|503|retry)|upstream_(rq_pending|rq_active"
                         r"|cx|cx_pool|rq_retry)_overflow|circuit_breakers\.(default|high)\.\w+_open)")
"""A proxyStatsMatcher inclusion regex that exports exactly the outbound-cluster stats this check reads
(Envoy matches it against the whole stat name); tests prove it against the real binary."""


@dataclass(frozen=True)
class ClusterStats:
    name: str
    total: int = 0
    errors_503: int = 0
    retries: int = 0
    open_breakers: tuple[str, ...] = ()
    """``default.rq_open``, ``high.cx_open``: breakers whose gauge reads 1 (at capacity)."""
    overflows: tuple[tuple[str, int], ...] = ()
    """``(counter, count)`` for each ``*_overflow`` counter above 0, in ``OVERFLOWS`` order."""

    @property
    def rejected(self) -> int:
        """Requests a circuit breaker refused with a local 503; none of them is in upstream_rq_total."""
        return sum(count for counter, count in self.overflows if _OVERFLOW_BY_COUNTER[counter].rejects_requests)

    @property
    def requests(self) -> int:
        """Requests as callers see them. upstream_rq_total counts every attempt that got a connection
        (retries too) but not the attempts a breaker refused, while upstream_rq_503 counts the final
        answers, local 503s included (conn_pool_base.cc increments upstream_rq_total only once a stream
        is attached). So: attempts that reached the upstream + refused attempts - retries."""
        return max(self.total + self.rejected - self.retries, 0)

    def overflow(self, counter: str) -> int:
        return dict(self.overflows).get(counter, 0)

    def open_breakers_among(self, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(b for b in self.open_breakers if b.partition(".")[2] in names)

    @property
    def host(self) -> str | None:
        """The service host of an Istio cluster name (``outbound|8080|v1|reviews.prod.svc.cluster.local``)."""
        parts = self.name.split("|")
        if len(parts) != 4 or not parts[3]:
            return None
        return parts[3]


@dataclass(frozen=True)
class EnvoyStats:
    clusters: Mapping[str, ClusterStats]
    count: int
    """How many stats Envoy exports (one per line of /stats)."""
    active_clusters: int | None = None
    """``cluster_manager.active_clusters``: how many clusters Envoy has, exported or not."""

    @property
    def hidden_service_clusters(self) -> int:
        """How many clusters Envoy has whose per-cluster stats it does not export, when it exports none
        for any service cluster (Istio's default stats matcher); 0 when the stats are there or unknown."""
        if self.active_clusters is None or any(n not in CONTROL_PLANE_CLUSTERS for n in self.clusters):
            return 0
        return max(self.active_clusters - len(self.clusters), 0)


def parse_stats(text: str) -> EnvoyStats:
    """Envoy's text ``/stats`` (``name: value`` lines) -> the per-cluster counters the check uses."""
    counters: dict[str, dict[str, int]] = defaultdict(dict)
    active_clusters: int | None = None
    lines = text.splitlines()
    # A busy sidecar exports tens of thousands of lines: one cheap suffix test each, no regex.
    # Prefixed variants (cluster.X.internal.upstream_rq_503, cluster.X.zone.…) land in
    # clusters of their own that have no upstream_rq_total, so they never count twice.
    for line in lines:
        name, _, value = line.rpartition(": ")
        if not value.isdigit():
            continue
        if name == _ACTIVE_CLUSTERS:
            active_clusters = int(value)
            continue
        if not (name.startswith("cluster.") and name.endswith(_WANTED_SUFFIXES)):
            continue
        cluster, _, stat = name.removeprefix("cluster.").partition(_BREAKER_INFIX)
        if not stat:
            cluster, _, stat = cluster.rpartition(".")
        counters[cluster][stat] = int(value)
    return EnvoyStats(clusters={name: _cluster_stats(name, values) for name, values in counters.items()},
                      count=len(lines), active_clusters=active_clusters)


def _cluster_stats(name: str, values: Mapping[str, int]) -> ClusterStats:
    return ClusterStats(name=name, total=values.get("upstream_rq_total", 0),
                        errors_503=values.get("upstream_rq_503", 0), retries=values.get("upstream_rq_retry", 0),
                        open_breakers=tuple(b for b in BREAKERS if values.get(b) == 1),
                        overflows=tuple((o.counter, values[o.counter]) for o in OVERFLOWS
                                        if values.get(o.counter, 0) > 0))


def memory_bytes(answer: Any) -> int | None:
    """Envoy's memory use from ``/memory`` (numbers arrive as strings), or None when absent."""
    if not isinstance(answer, Mapping):
        return None
    # total_physical_bytes is tcmalloc's estimate of the memory actually backed by RAM
    # (heap minus pages returned to the OS, plus allocator metadata): the closest field
    # to the RSS the OOM killer sees. heap_size also counts unmapped pages.
    for name in ("total_physical_bytes", "heap_size", "allocated"):
        try:
            return int(answer[name])
        except (KeyError, TypeError, ValueError):
            continue
    return None


@check("envoy", kinds=("Pod",),
       summary="Envoy sidecars: open circuit breakers, 503 share, retry storms, memory and stats count")
def envoy(ctx: CheckContext) -> list[Finding]:
    if ctx.endpoints is None:
        return [_skipped("no Envoy admin endpoint configured (give --envoy-admin or a cluster)")]
    targets = ctx.endpoints.envoy_targets(ctx.snapshot, ctx.namespace)
    if not targets:
        return [_skipped("no running sidecars to inspect")]
    findings: list[Finding] = []
    for target in targets:
        try:
            with ctx.endpoints.open_envoy(target, ctx.snapshot) as endpoint:
                stats = parse_stats(endpoint.get_text(STATS_PATH))
                memory = memory_bytes(endpoint.get_json(MEMORY_PATH))
        except MeshbotError as exc:
            findings.append(admin_unreachable(target, exc, check="envoy"))
            continue
        findings.extend(_cluster_findings(target, stats, ctx.thresholds))
        findings.extend(_stats_export_findings(target, stats))
        findings.extend(_resource_findings(target, stats, memory, ctx))
    return findings


def admin_unreachable(target: PodRef, exc: MeshbotError, *, check: str) -> Finding:
    """MB4006 for a sidecar whose admin API did not answer; shared by every check that reads it."""
    endpoint = getattr(exc, "endpoint", None) or f"{target}:15000"
    return codes.finding(
        "MB4006", check=check, origin=f"Pod {target}", pod=str(target), endpoint=endpoint, reason=str(exc),
        evidence={"endpoint": endpoint, "reason": str(exc)},
        remediation=Remediation("Check the pod is running and its istio-proxy container is ready; the admin "
                                "API listens on 127.0.0.1:15000 inside the pod",
                                command=f"kubectl -n {target.namespace} get pod {target.name} -o wide"))


def _skipped(reason: str) -> Finding:
    return codes.finding("MB0004", check="envoy", origin="check envoy", check_name="envoy", reason=reason)


def _cluster_findings(target: PodRef, stats: EnvoyStats, thresholds: Thresholds) -> Iterator[Finding]:
    origin, pod = f"Pod {target}", str(target)
    for cluster in sorted(stats.clusters.values(), key=lambda c: c.name):
        evidence = {"cluster": cluster.name, "requests": cluster.requests, "upstream_rq_total": cluster.total,
                    "upstream_rq_503": cluster.errors_503, "upstream_rq_retry": cluster.retries,
                    **{o.counter: cluster.overflow(o.counter) for o in OVERFLOWS},
                    "open_circuit_breakers": list(cluster.open_breakers)}
        yield from _breaker_findings(target, cluster, evidence)
        if cluster.requests < thresholds.min_requests:
            continue
        if cluster.errors_503 / cluster.requests >= thresholds.upstream_503_share:
            yield codes.finding("MB4002", origin=origin, pod=pod, cluster=cluster.name,
                                percent=_percent(cluster.errors_503, cluster.requests), errors=cluster.errors_503,
                                total=cluster.requests, evidence=evidence, remediation=Remediation(
                                    "Find which response flag the 503s carry in the access log (UO: circuit "
                                    "breaker, UH: no healthy upstream, UF: connect failure, URX: retries "
                                    "exhausted) and fix the upstream or its DestinationRule",
                                    command=f"kubectl -n {target.namespace} logs {target.name} -c istio-proxy "
                                            f"--tail=500 | grep ' 503 '"))
        if cluster.retries / cluster.requests >= thresholds.retry_share:
            yield codes.finding("MB4003", origin=origin, pod=pod, cluster=cluster.name, retries=cluster.retries,
                                total=cluster.requests, percent=_percent(cluster.retries, cluster.requests),
                                evidence=evidence, remediation=Remediation(
                                    "Cap retries: fewer VirtualService retries.attempts and a narrower retryOn, "
                                    "and a DestinationRule connectionPool.http.maxRetries so a failing upstream "
                                    "is not hit several times per request",
                                    command=_proxy_config_cluster(target, cluster)))


# What one more of each thing gets once its breaker is at capacity: conn_pool_base.cc (newStream,
# attachStreamToClient) and conn_pool_map_impl.h (getPool) in envoyproxy/envoy source/common/.
_AT_CAPACITY_CONSEQUENCE = {
    "rq_open": "one more concurrent request gets a 503 UO",
    "rq_pending_open": "one more request waiting for a connection gets a 503 UO",
    "rq_retry_open": "further retries are skipped",
    "cx_pool_open": "a request that needs a new connection pool gets a 503",
}


def _breaker_findings(target: PodRef, cluster: ClusterStats, evidence: Mapping[str, Any]) -> Iterator[Finding]:
    """Rejections (overflow counters) are errors; a breaker at capacity that refused nothing is not.

    Envoy's docs call a gauge of 1 "at capacity and no longer admitting": for requests, pending requests,
    retries and pools the next one is refused (Warning); for connections, requests queue for a free one
    and conn_pool_base.cc still opens a first connection to a host that has none (Info).
    """
    origin, pod = f"Pod {target}", str(target)
    if cluster.rejected:
        yield codes.finding("MB4001", origin=origin, pod=pod, cluster=cluster.name, rejected=cluster.rejected,
                            overflows=_overflow_text(cluster), state=_breaker_state(cluster.open_breakers),
                            evidence=evidence, remediation=_connection_pool_remediation(target, cluster))
    else:
        yield from _at_capacity_findings(target, cluster, evidence)
    if skipped := cluster.overflow("upstream_rq_retry_overflow"):
        yield codes.finding("MB4008", origin=origin, pod=pod, cluster=cluster.name, count=skipped,
                            evidence=evidence, remediation=Remediation(
                                # circuit_breaking.rst: max_retries caps concurrent retries so retries
                                # cannot multiply the load on a failing upstream.
                                "Retries were cut off to protect the upstream, which is working as designed; "
                                "fix the failures that trigger them. Raising DestinationRule "
                                "connectionPool.http.maxRetries lets more retries through and adds load to an "
                                "upstream that is already failing",
                                command=_proxy_config_cluster(target, cluster)))


def _at_capacity_findings(target: PodRef, cluster: ClusterStats, evidence: Mapping[str, Any]) -> Iterator[Finding]:
    """Breakers that are full, or connections that were refused, while no request has been rejected."""
    origin, pod = f"Pod {target}", str(target)
    if request_breakers := cluster.open_breakers_among(REQUEST_BREAKERS):
        consequences = "; ".join(dict.fromkeys(_AT_CAPACITY_CONSEQUENCE[b.partition(".")[2]]
                                               for b in request_breakers))
        yield codes.finding("MB4010", origin=origin, pod=pod, cluster=cluster.name,
                            breaker=_breaker_names(request_breakers), consequence=consequences,
                            evidence=evidence, remediation=_connection_pool_remediation(target, cluster))
    if queued := cluster.overflow("upstream_cx_overflow"):
        yield codes.finding("MB4011", origin=origin, pod=pod, cluster=cluster.name, count=queued,
                            evidence=evidence, remediation=_connection_pool_remediation(target, cluster))
    elif connection_breakers := cluster.open_breakers_among(CONNECTION_BREAKERS):
        yield codes.finding("MB4009", origin=origin, pod=pod, cluster=cluster.name,
                            breaker=_breaker_names(connection_breakers), evidence=evidence,
                            remediation=Remediation(
                                # circuit_breaking.rst ("Cluster maximum connections"): the overflow is
                                # counted in upstream_cx_overflow and requests wait in the pending queue.
                                "Nothing to fix while no request is rejected: tcp.maxConnections only makes "
                                "requests wait for a connection. If upstream_rq_pending_overflow starts to "
                                "grow, raise the DestinationRule connectionPool limits or scale the upstream",
                                command=_proxy_config_cluster(target, cluster)))


def _overflow_text(cluster: ClusterStats) -> str:
    """``23 over max_pending_requests (http1MaxPendingRequests), 2 over max_requests (http2MaxRequests)``."""
    return ", ".join(f"{count} over {_OVERFLOW_BY_COUNTER[counter].limit}"
                     for counter, count in cluster.overflows if _OVERFLOW_BY_COUNTER[counter].rejects_requests)


def _breaker_state(open_breakers: tuple[str, ...]) -> str:
    if open_breakers:
        return f"{_breaker_names(open_breakers)} still at capacity"
    # The counters add up since Envoy started; with every gauge at 0 the limit was hit by an earlier burst.
    return "no breaker is at capacity now"


def _stats_export_findings(target: PodRef, stats: EnvoyStats) -> Iterator[Finding]:
    """MB4012 when Envoy has service clusters but exports none of their stats, so the checks above saw nothing."""
    hidden = stats.hidden_service_clusters
    if not hidden:
        return
    yield codes.finding(
        "MB4012", origin=f"Pod {target}", pod=str(target), count=hidden,
        evidence={"active_clusters": stats.active_clusters, "exported_clusters": sorted(stats.clusters)},
        remediation=Remediation(
            # Istio's default inclusion list is cluster_manager, listener_manager, server, cluster.xds-grpc
            # (istio/istio pkg/bootstrap/config.go, tools/packaging/common/envoy_bootstrap.json; docs:
            # https://istio.io/latest/docs/ops/configuration/telemetry/envoy-stats/). The regex keeps only
            # the counters this check reads; a prefix such as cluster.outbound exports every cluster stat
            # and costs memory on every sidecar (MB4007).
            "Export the upstream stats this check reads: set proxyStatsMatcher.inclusionRegexps to "
            f"['{STATS_INCLUSION_REGEX}'] in the workload's proxy.istio.io/config pod annotation (merge it "
            "into an existing annotation, which may hold other ProxyConfig settings) or in "
            "meshConfig.defaultConfig for every sidecar. The matcher is part of Envoy's bootstrap, so it "
            "takes effect when the pods restart",
            command=f"istioctl proxy-config bootstrap {target.name} -n {target.namespace} -o json"))


def _resource_findings(target: PodRef, stats: EnvoyStats, memory: int | None,
                       ctx: CheckContext) -> Iterator[Finding]:
    origin, pod, limits = f"Pod {target}", str(target), ctx.thresholds
    if memory is not None:
        error, warning = limits.envoy_memory_error_mb * MIB, limits.envoy_memory_warning_mb * MIB
        evidence = {"memory_bytes": memory, "stats_count": stats.count}
        if memory > error:
            yield codes.finding("MB4005", origin=origin, pod=pod, memory=human_bytes(memory),
                                threshold=human_bytes(error), evidence=evidence,
                                remediation=_restart_remediation(target, ctx.snapshot))
        elif memory > warning:
            yield codes.finding("MB4004", origin=origin, pod=pod, memory=human_bytes(memory),
                                threshold=human_bytes(warning), evidence=evidence,
                                remediation=_restart_remediation(target, ctx.snapshot))
    if stats.count > limits.stats_count_warning:
        yield codes.finding("MB4007", origin=origin, pod=pod, count=stats.count, threshold=limits.stats_count_warning,
                            evidence={"stats_count": stats.count}, remediation=Remediation(
                                "Keep only the stats you graph: set proxyStatsMatcher in the pod's "
                                "proxy.istio.io/config annotation or meshConfig.defaultConfig, and scope the "
                                "sidecar's clusters with a Sidecar resource"))


def _breaker_names(open_breakers: tuple[str, ...]) -> str:
    """``default.rq_open``, ``high.cx_open`` -> ``rq_open and high-priority cx_open``."""
    names = [name if priority == "default" else f"{priority}-priority {name}"
             for priority, _, name in (b.partition(".") for b in open_breakers)]
    return " and ".join(names)


def _percent(part: int, whole: int) -> str:
    return f"{round(100 * part / whole, 1):g}"


def _proxy_config_cluster(target: PodRef, cluster: ClusterStats) -> str:
    fqdn = f" --fqdn {cluster.host}" if cluster.host else ""
    return f"istioctl proxy-config cluster {target.name} -n {target.namespace}{fqdn} -o json"


def _connection_pool_remediation(target: PodRef, cluster: ClusterStats) -> Remediation:
    subject = cluster.host or cluster.name
    # Istio leaves every Envoy threshold at its maximum unless a DestinationRule sets connectionPool
    # (istio/istio pilot/pkg/networking/core/cluster_traffic_policy.go); the limits fail fast on purpose
    # (envoyproxy/envoy docs/root/intro/arch_overview/upstream/circuit_breaking.rst), so raising them moves
    # the queue onto the upstream.
    return Remediation(
        f"Requests to {subject} hit the connectionPool limits of its DestinationRule (tcp.maxConnections, "
        "http.http1MaxPendingRequests, http.http2MaxRequests, http.maxRetries): raise them only if the "
        "upstream can take more, since higher limits pass the overload on to it; otherwise find out why it "
        "is slow",
        command=_proxy_config_cluster(target, cluster))


def _restart_remediation(target: PodRef, snapshot: Snapshot) -> Remediation:
    summary = ("Restart the workload to give Envoy fresh memory; if it grows back, scope its config with a "
               "Sidecar resource and its stats with proxyStatsMatcher")
    pod = snapshot.get("Pod", target.namespace, target.name)
    deployment = owner_deployment(pod) if pod else None
    if deployment:
        return Remediation(summary, command=f"kubectl -n {target.namespace} rollout restart deployment/{deployment}",
                           action=f"restart {deployment} -n {target.namespace}")
    return Remediation(summary, command=f"kubectl -n {target.namespace} delete pod {target.name}")
