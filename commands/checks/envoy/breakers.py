"""UO: circuit breakers that refused requests (MB4001), cut retries (MB4008) or sit at capacity (MB4009-MB4011),
and retry storms (MB4003)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from commands import codes
from commands.checks.envoy.stats import (
    CONNECTION_BREAKERS,
    OVERFLOW_BY_COUNTER,
    OVERFLOWS,
    REQUEST_BREAKERS,
    ClusterStats,
)
from commands.findings import Finding, Remediation
from commands.resources.references import PodRef
from commands.thresholds import Thresholds

# What one more of each thing gets once its breaker is at capacity: conn_pool_base.cc (newStream,
# attachStreamToClient) and conn_pool_map_impl.h (getPool) in envoyproxy/envoy source/common/.
_AT_CAPACITY_CONSEQUENCE = {
    "rq_open": "one more concurrent request gets a 503 UO",
    "rq_pending_open": "one more request waiting for a connection gets a 503 UO",
    "rq_retry_open": "further retries are skipped",
    "cx_pool_open": "a request that needs a new connection pool gets a 503",
}


def breaker_findings(target: PodRef, cluster: ClusterStats, thresholds: Thresholds) -> Iterator[Finding]:
    """Rejections (overflow counters) are errors; a breaker at capacity that refused nothing is not.

    Envoy's docs call a gauge of 1 "at capacity and no longer admitting": for requests, pending requests,
    retries and pools the next one is refused (Warning); for connections, requests queue for a free one
    and conn_pool_base.cc still opens a first connection to a host that has none (Info).
    """
    evidence = {"cluster": cluster.name, "requests": cluster.requests, "upstream_rq_total": cluster.total,
                "upstream_rq_retry": cluster.retries, **{o.counter: cluster[o.counter] for o in OVERFLOWS},
                "open_circuit_breakers": list(cluster.open_breakers)}
    origin, pod, service = f"Pod {target}", str(target), cluster.cluster.service
    if cluster.rejected:
        yield codes.finding("MB4001", origin=origin, pod=pod, service=service, rejected=cluster.rejected,
                            overflows=_overflow_text(cluster), state=_breaker_state(cluster.open_breakers),
                            evidence=evidence, remediation=_connection_pool_remediation(target, cluster))
    else:
        yield from _at_capacity_findings(target, cluster, evidence)
    if skipped := cluster["upstream_rq_retry_overflow"]:
        yield codes.finding("MB4008", origin=origin, pod=pod, service=service, count=skipped,
                            evidence=evidence, remediation=Remediation(
                                # circuit_breaking.rst: max_retries caps concurrent retries so retries
                                # cannot multiply the load on a failing upstream.
                                "Retries were cut off to protect the upstream, which is working as designed; "
                                "fix the failures that trigger them. Raising DestinationRule "
                                "connectionPool.http.maxRetries lets more retries through and adds load to an "
                                "upstream that is already failing",
                                command=proxy_config_cluster(target, cluster)))
    if cluster.requests >= thresholds.min_requests and cluster.retries / cluster.requests >= thresholds.retry_share:
        yield codes.finding("MB4003", origin=origin, pod=pod, service=service, retries=cluster.retries,
                            total=cluster.requests, percent=f"{round(100 * cluster.retries / cluster.requests, 1):g}",
                            evidence=evidence, remediation=Remediation(
                                "Cap retries: fewer VirtualService retries.attempts and a narrower retryOn, "
                                "and a DestinationRule connectionPool.http.maxRetries so a failing upstream "
                                "is not hit several times per request",
                                command=proxy_config_cluster(target, cluster)))


def _at_capacity_findings(target: PodRef, cluster: ClusterStats, evidence: Mapping[str, Any]) -> Iterator[Finding]:
    """Breakers that are full, or connections that were refused, while no request has been rejected."""
    origin, pod, service = f"Pod {target}", str(target), cluster.cluster.service
    if request_breakers := cluster.open_breakers_among(REQUEST_BREAKERS):
        consequences = "; ".join(dict.fromkeys(_AT_CAPACITY_CONSEQUENCE[b.partition(".")[2]]
                                               for b in request_breakers))
        yield codes.finding("MB4010", origin=origin, pod=pod, service=service,
                            breaker=_breaker_names(request_breakers), consequence=consequences,
                            evidence=evidence, remediation=_connection_pool_remediation(target, cluster))
    if queued := cluster["upstream_cx_overflow"]:
        yield codes.finding("MB4011", origin=origin, pod=pod, service=service, count=queued,
                            evidence=evidence, remediation=_connection_pool_remediation(target, cluster))
    elif connection_breakers := cluster.open_breakers_among(CONNECTION_BREAKERS):
        yield codes.finding("MB4009", origin=origin, pod=pod, service=service,
                            breaker=_breaker_names(connection_breakers), evidence=evidence,
                            remediation=Remediation(
                                # circuit_breaking.rst ("Cluster maximum connections"): the overflow is
                                # counted in upstream_cx_overflow and requests wait in the pending queue.
                                "Nothing to fix while no request is rejected: tcp.maxConnections only makes "
                                "requests wait for a connection. If requests start to be rejected, raise the "
                                "DestinationRule connectionPool limits or scale the upstream",
                                command=proxy_config_cluster(target, cluster)))


def _overflow_text(cluster: ClusterStats) -> str:
    """``23 over max_pending_requests (http1MaxPendingRequests), 2 over max_requests (http2MaxRequests)``."""
    return ", ".join(f"{count} over {OVERFLOW_BY_COUNTER[counter].limit}"
                     for counter, count in cluster.overflows if OVERFLOW_BY_COUNTER[counter].rejects_requests)


def _breaker_state(open_breakers: tuple[str, ...]) -> str:
    if open_breakers:
        return f"{_breaker_names(open_breakers)} still at capacity"
    # The counters add up since Envoy started; with every gauge at 0 the limit was hit by an earlier burst.
    return "no breaker is at capacity now"


# The threshold each gauge watches (cluster_stats.rst "Circuit breakers statistics"; the Cluster proto's
# CircuitBreakers.Thresholds): people configure thresholds, so findings name those, not the gauges.
_THRESHOLD_OF_GAUGE = {"cx_open": "max_connections", "rq_open": "max_requests",
                       "rq_pending_open": "max_pending_requests", "rq_retry_open": "max_retries",
                       "cx_pool_open": "max_connection_pools"}


def _breaker_names(open_breakers: tuple[str, ...]) -> str:
    """``default.rq_open``, ``high.cx_open`` -> ``max_requests and high-priority max_connections``."""
    names = [_THRESHOLD_OF_GAUGE[name] if priority == "default" else f"{priority}-priority {_THRESHOLD_OF_GAUGE[name]}"
             for priority, _, name in (b.partition(".") for b in open_breakers)]
    return " and ".join(names)


def proxy_config_cluster(target: PodRef, cluster: ClusterStats) -> str:
    return f"istioctl proxy-config cluster {target.name} -n {target.namespace}{cluster.cluster.istioctl_filter()} -o json"


def _connection_pool_remediation(target: PodRef, cluster: ClusterStats) -> Remediation:
    # Istio leaves every Envoy threshold at its maximum unless a DestinationRule sets connectionPool
    # (istio/istio pilot/pkg/networking/core/cluster_traffic_policy.go); the limits fail fast on purpose
    # (envoyproxy/envoy docs/root/intro/arch_overview/upstream/circuit_breaking.rst), so raising them moves
    # the queue onto the upstream.
    return Remediation(
        f"Requests to {cluster.cluster.service} hit the connectionPool limits of its DestinationRule "
        "(tcp.maxConnections, http.http1MaxPendingRequests, http.http2MaxRequests, http.maxRetries): raise them "
        "only if the upstream can take more, since higher limits pass the overload on to it; otherwise find out "
        "why it is slow",
        command=proxy_config_cluster(target, cluster))
