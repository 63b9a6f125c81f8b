"""The ``envoy`` check: circuit breakers, 503s, retries, memory and stats count from sidecar admin APIs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from commands import codes
from commands.checks.registry import CheckContext, Thresholds, check
from commands.cluster.endpoints import PodRef
from commands.errors import MeshbotError
from commands.findings import Finding, Remediation
from commands.cluster.pods import owner_deployment
from commands.cluster.quantity import human_bytes
from commands.cluster.snapshot import Snapshot

STATS_PATH = "/stats"
MEMORY_PATH = "/memory"
MIB = 2**20

BREAKERS = tuple(f"{priority}.{name}" for priority in ("default", "high")
                 for name in ("cx_open", "rq_open", "rq_pending_open", "rq_retry_open"))
_BREAKER_INFIX = ".circuit_breakers."
_COUNTERS = ("upstream_rq_total", "upstream_rq_503", "upstream_rq_retry")
_WANTED_SUFFIXES = tuple(f".{c}" for c in _COUNTERS) + tuple(f"{_BREAKER_INFIX}{b}" for b in BREAKERS)


@dataclass(frozen=True)
class ClusterStats:
    name: str
    total: int = 0
    errors_503: int = 0
    retries: int = 0
    open_breakers: tuple[str, ...] = ()
    """``default.rq_open``, ``high.cx_open``: breakers whose gauge reads 1."""

    @property
    def requests(self) -> int:
        """Requests as callers see them: upstream_rq_total counts every retry attempt too,
        while upstream_rq_503 counts only final answers."""
        return max(self.total - self.retries, 0)

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


def parse_stats(text: str) -> EnvoyStats:
    """Envoy's text ``/stats`` (``name: value`` lines) -> the per-cluster counters the check uses."""
    counters: dict[str, dict[str, int]] = defaultdict(dict)
    lines = text.splitlines()
    # A busy sidecar exports tens of thousands of lines: one cheap suffix test each, no regex.
    # Prefixed variants (cluster.X.internal.upstream_rq_503, cluster.X.zone.…) land in
    # clusters of their own that have no upstream_rq_total, so they never count twice.
    for line in lines:
        name, _, value = line.rpartition(": ")
        if not (name.startswith("cluster.") and name.endswith(_WANTED_SUFFIXES) and value.isdigit()):
            continue
        cluster, _, stat = name.removeprefix("cluster.").partition(_BREAKER_INFIX)
        if not stat:
            cluster, _, stat = cluster.rpartition(".")
        counters[cluster][stat] = int(value)
    return EnvoyStats(clusters={name: _cluster_stats(name, values) for name, values in counters.items()},
                      count=len(lines))


def _cluster_stats(name: str, values: Mapping[str, int]) -> ClusterStats:
    return ClusterStats(name=name, total=values.get("upstream_rq_total", 0),
                        errors_503=values.get("upstream_rq_503", 0), retries=values.get("upstream_rq_retry", 0),
                        open_breakers=tuple(b for b in BREAKERS if values.get(b) == 1))


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
        evidence = {"cluster": cluster.name, "upstream_rq_total": cluster.total,
                    "upstream_rq_503": cluster.errors_503, "upstream_rq_retry": cluster.retries,
                    "open_circuit_breakers": list(cluster.open_breakers)}
        if cluster.open_breakers:
            yield codes.finding("MB4001", origin=origin, pod=pod, cluster=cluster.name,
                                breaker=_breaker_names(cluster.open_breakers), evidence=evidence,
                                remediation=_connection_pool_remediation(target, cluster))
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
    return Remediation(
        f"Requests to {subject} hit the connectionPool limits of its DestinationRule (tcp.maxConnections, "
        "http.http1MaxPendingRequests, http.http2MaxRequests, http.maxRetries): raise them if the upstream "
        "can take more, otherwise find out why it is slow",
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
