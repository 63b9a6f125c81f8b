"""Streams the sidecar ended for being idle (response flag SI): a stream idle timeout someone set on a mesh that has none.

Envoy's connection manager ends a stream that sends and receives nothing for ``stream_idle_timeout`` (Envoy's default
5 minutes), or for the route's ``idle_timeout`` when the route sets one; it counts ``downstream_rq_idle_timeout``, sets
SI and answers 504 when the whole request was received (waiting on the upstream), 408 while the caller was still
sending (envoyproxy/envoy source/common/http/conn_manager_impl.cc ``ActiveStream::onIdleTimeout``,
``Utility::maybeRequestTimeoutCode``; api-v3 http_connection_manager.proto ``stream_idle_timeout``, route.proto
``RouteAction.idle_timeout``).  Measured on the real Envoy 1.40: both timeouts count on the connection manager's
counter and answer 504 "stream timeout" to a silent upstream (tests/test_outage_stream_idle_timeout.py).

Istio turns the timeout off: every HTTP connection manager it builds gets ``stream_idle_timeout: 0s``
(istio/istio pilot/pkg/networking/core/listener_builder.go ``buildHTTPConnectionManager``) and no route gets an
``idle_timeout`` (core/route/route.go).  Only ProxyConfig ``connectionSettings.httpStreamIdleTimeout`` (its EDGE
profile gives gateways 5 minutes; core/connection_settings.go, Istio 1.31) or an EnvoyFilter patching either field
turns it back on, so on a sidecar SI always points at configuration someone added.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from commands import codes
from commands.checks.envoy.failures import significant
from commands.checks.envoy.flags import FAILURE_MODES
from commands.checks.envoy.names import ClusterName, listener_port
from commands.checks.envoy.stats import EnvoyStats
from commands.findings import Finding
from commands.resources.references import PodRef
from commands.thresholds import Thresholds

IDLE_TIMEOUTS = "downstream_rq_idle_timeout"


def idle_timeout_findings(target: PodRef, stats: EnvoyStats, thresholds: Thresholds) -> Iterator[Finding]:
    """MB4032 for each listener port whose streams were ended by an idle timeout often enough to be an outage."""
    for prefix, manager in sorted(stats.connection_managers.items()):
        ended, requests = manager[IDLE_TIMEOUTS], manager["downstream_rq_total"]
        if not significant(ended, requests, thresholds):
            continue
        where = listener_port(prefix)
        chosen = FAILURE_MODES["MB4032"].cause("idle-timeout-set")
        yield codes.finding(
            "MB4032", origin=f"Pod {target}", pod=str(target), count=ended, total=requests, listener=where,
            cause=chosen.state,
            evidence={"cause": chosen.key, "listener": where, f"{where} {IDLE_TIMEOUTS}": ended,
                      f"{where} downstream_rq_total": requests},
            remediation=chosen.remediation(pod=target.name, namespace=target.namespace,
                                           listener_port=where.rpartition(" ")[2]))


def without_idle_timeout_echoes(findings: Iterable[Finding], idle_timeouts: Iterable[Finding]) -> Iterator[Finding]:
    """``findings`` less the MB4019 ("the caller gave up") that SI on the same port explains.

    When the idle timeout fires Envoy resets the upstream request itself, so the host's rq_total grows with neither a
    success nor an error, exactly what MB4019 reads (measured on the real Envoy 1.40).  A cluster on the port of a
    connection manager that ended at least as many streams by its idle timeout gets no second, wrong cause.
    """
    ended = {str(f.evidence["listener"]): int(f.evidence[f"{f.evidence['listener']} {IDLE_TIMEOUTS}"])
             for f in idle_timeouts}
    for finding in findings:
        if finding.code == "MB4019" and _abandoned(finding) <= ended.get(_listener_of(finding), -1):
            continue
        yield finding


def _listener_of(finding: Finding) -> str:
    cluster = ClusterName.parse(str(finding.evidence.get("cluster", "")))
    return f"{cluster.direction} port {cluster.port}"


def _abandoned(finding: Finding) -> int:
    evidence = finding.evidence
    return int(evidence["hosts.rq_total"]) - int(evidence["hosts.rq_success"]) - int(evidence["hosts.rq_error"])
