"""Upstream failures per cluster, one finding per response flag (UH, UF, TLS, URX, UT, UC, DC) and the 5xx share.

Each finding takes its cause and first step from the failure-mode table (``flags.FAILURE_MODES``).  Counts come
from the cluster's stats when the sidecar exports them, else from ``/clusters`` host counters, which Istio's stats
matcher never hides (the finding then says connections or attempts, which is what hosts count).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from commands import codes
from commands.checks.envoy.flags import FAILURE_MODES, FailureMode
from commands.checks.envoy.hosts import ClusterHosts
from commands.checks.envoy.names import PASSTHROUGH, ClusterName
from commands.checks.envoy.stats import OVERFLOWS, ClusterStats
from commands.findings import Finding, Remediation
from commands.resources.references import PodRef
from commands.thresholds import Thresholds

# TLS counters by cause, most specific first (envoyproxy/envoy docs/root/configuration/listeners/stats.rst, TLS
# statistics; source/common/tls/cert_validator/default_validator.cc counts fail_verify_san / fail_verify_error).
_TLS_CAUSES = (("ssl.fail_verify_error", "untrusted-root"), ("ssl.fail_verify_san", "wrong-identity"),
               ("ssl.fail_verify_no_cert", "handshake"), ("ssl.fail_verify_cert_hash", "wrong-identity"),
               ("ssl.connection_error", "handshake"))
_TLS_WORDS = {"ssl.fail_verify_error": "certificate not signed by a trusted root",
              "ssl.fail_verify_san": "certificate identity not the expected one",
              "ssl.fail_verify_no_cert": "no certificate presented",
              "ssl.fail_verify_cert_hash": "certificate hash not the pinned one",
              "ssl.connection_error": "handshake error"}
UNKNOWN_COUNT = "an unknown number of"
"""What a count reads as when the sidecar does not export the counter (Istio's default stats matcher)."""


@dataclass(frozen=True)
class Upstream:
    """What is known about one service cluster of one sidecar: its stats (None when not exported), its hosts."""

    target: PodRef
    name: ClusterName
    stats: ClusterStats | None
    hosts: ClusterHosts | None

    def fields(self) -> dict[str, Any]:
        """The names a cause's command template may use."""
        svc = self.name.kubernetes_service or (self.target.namespace, self.name.host)
        return {"pod": self.target.name, "namespace": self.target.namespace, "filter": self.name.istioctl_filter(),
                "svc_namespace": svc[0], "svc_name": svc[1], "port": self.name.port,
                "listener_port": self.name.port}

    def finding(self, mode: FailureMode, cause: str, *, count: int | str, unit: str, detail: str,
                evidence: Mapping[str, Any]) -> Finding:
        chosen = mode.cause(cause)
        remediation = chosen.remediation(**self.fields())
        if "{svc_name}" in chosen.command and self.name.kubernetes_service is None:
            # A ServiceEntry host (api.stripe.com) has no EndpointSlices: the endpoints Envoy holds are the evidence.
            remediation = Remediation(chosen.first_step, command=f"istioctl proxy-config endpoint {self.target.name} "
                                                                 f"-n {self.target.namespace}{self.name.istioctl_filter()}")
        return codes.finding(mode.code, origin=f"Pod {self.target}", pod=str(self.target),
                             service=self.name.service, count=count, unit=unit, cause=chosen.state, detail=detail,
                             evidence={"cluster": self.name.raw, "cause": cause, **evidence}, remediation=remediation)


def significant(count: int, whole: int | None, thresholds: Thresholds) -> bool:
    """Enough failures of one flag to be an outage: at least the floor, and at least ``flag_share`` of ``whole``
    (what they could have hit) when that is known.  Envoy's counters add up since it started."""
    if count < thresholds.min_flag_failures:
        return False
    return not whole or count / whole >= thresholds.flag_share


def failure_findings(target: PodRef, name: ClusterName, stats: ClusterStats | None, hosts: ClusterHosts | None,
                     thresholds: Thresholds) -> Iterator[Finding]:
    upstream = Upstream(target, name, stats, hosts)
    yield from _no_healthy_upstream(upstream, thresholds)
    yield from _connect_failures(upstream, thresholds)
    requests = stats.requests if stats else (hosts.total("rq_total") if hosts else 0)
    connections = stats["upstream_cx_total"] if stats else 0
    for code, counter, host_counter, cause, unit, whole in (
            ("MB4016", "upstream_rq_retry_limit_exceeded", None, "persistent-failure", "requests", requests),
            ("MB4017", "upstream_rq_timeout", "rq_timeout", "slow-upstream", "requests", requests),
            ("MB4018", "upstream_cx_destroy_remote_with_active_rq", None,
             "app-closed" if name.is_inbound else "upstream-closed", "connections", connections)):
        count = stats[counter] if stats else (hosts.total(host_counter) if hosts and host_counter else 0)
        if significant(count, whole, thresholds):
            yield upstream.finding(FAILURE_MODES[code], cause, count=count, unit=unit, detail="",
                                   evidence={counter if stats else f"hosts.{host_counter}": count})
    if hosts and significant(abandoned := hosts.abandoned, hosts.total("rq_total"), thresholds):
        yield upstream.finding(FAILURE_MODES["MB4019"], "caller-gave-up", count=abandoned, unit="requests",
                               detail="", evidence={"hosts.rq_total": hosts.total("rq_total"),
                                                    "hosts.rq_success": hosts.total("rq_success"),
                                                    "hosts.rq_error": hosts.total("rq_error")})
    if stats:
        yield from _error_share(upstream, stats, thresholds)


def _no_healthy_upstream(upstream: Upstream, thresholds: Thresholds) -> Iterator[Finding]:
    """UH: requests that found no host, or (stats hidden) a cluster whose every host is ejected."""
    stats, hosts = upstream.stats, upstream.hosts
    count = stats["upstream_cx_none_healthy"] if stats else 0
    all_ejected = bool(hosts and hosts.hosts and len(hosts.ejected) == len(hosts.hosts))
    # Without stats the only trustworthy sign is ejection: outlier detection ejects a host only after real
    # traffic failed on it, while an empty cluster may simply be a service nobody calls.
    if not significant(count, stats.requests if stats else None, thresholds) and not (stats is None and all_ejected):
        return
    cause, detail = _uh_cause(hosts)
    yield upstream.finding(FAILURE_MODES["MB4013"], cause, count=count if stats else UNKNOWN_COUNT,
                           unit="requests", detail=detail,
                           evidence={"upstream_cx_none_healthy": count if stats else None,
                                     "hosts": len(hosts.hosts) if hosts else None,
                                     "ejected_hosts": len(hosts.ejected) if hosts else None,
                                     "healthy_hosts": len(hosts.healthy) if hosts else None})


def _uh_cause(hosts: ClusterHosts | None) -> tuple[str, str]:
    if hosts is None:
        return "no-endpoints", " (host health could not be read)"
    if not hosts.hosts:
        return "no-endpoints", ": the cluster has no endpoints"
    if hosts.ejected:
        return "outlier-ejected", f": {len(hosts.ejected)} of {len(hosts.hosts)} endpoints ejected by outlier detection"
    if not hosts.healthy:
        states = sorted({h.eds_health for h in hosts.hosts})
        return "not-ready", f": every endpoint is {'/'.join(states)} in EDS"
    return "outlier-ejected", f": all {len(hosts.hosts)} endpoints are healthy again now"


def _connect_failures(upstream: Upstream, thresholds: Thresholds) -> Iterator[Finding]:
    """UF, split into TLS failures (per ssl counter) and plain connect failures (refused or timed out)."""
    stats, hosts = upstream.stats, upstream.hosts
    tls = {counter: stats[counter] for counter, _ in _TLS_CAUSES if stats and stats[counter]}
    connections = stats["upstream_cx_total"] if stats else (hosts.total("cx_total") if hosts else 0)
    if stats and significant(sum(tls.values()), connections, thresholds):
        counter = max(tls, key=lambda c: tls[c])
        cause = dict(_TLS_CAUSES)[counter]
        yield upstream.finding(FAILURE_MODES["MB4015"], cause, count=sum(tls.values()), unit="connections",
                               detail=f" ({_TLS_WORDS[counter]})",
                               evidence={**tls, "upstream_cx_connect_fail": stats["upstream_cx_connect_fail"]})
    if stats:
        # A failed handshake is a failed connect too (the TLS socket reports Connected only after it).
        plain = stats["upstream_cx_connect_fail"] - sum(tls.values())
        evidence = {"upstream_cx_connect_fail": stats["upstream_cx_connect_fail"],
                    "upstream_cx_connect_timeout": stats["upstream_cx_connect_timeout"],
                    "upstream_rq_pending_failure_eject": stats["upstream_rq_pending_failure_eject"]}
        cause = "timeout" if stats["upstream_cx_connect_timeout"] else "refused"
        cause = "app-not-listening" if upstream.name.is_inbound else cause
        detail = ", timed out" if cause == "timeout" else ", refused or reset"
    else:
        plain = hosts.total("cx_connect_fail") if hosts else 0
        evidence = {"hosts.cx_connect_fail": plain}
        cause, detail = "refused", ": refused, timed out or TLS; this sidecar does not export the counters that tell"
        if upstream.name.is_inbound:
            cause, detail = "app-not-listening", ""
    if significant(plain, connections, thresholds):
        yield upstream.finding(FAILURE_MODES["MB4014"], cause, count=plain, unit="connections", detail=detail,
                               evidence=evidence)


def _error_share(upstream: Upstream, stats: ClusterStats, thresholds: Thresholds) -> Iterator[Finding]:
    """MB4002: the share of requests that got a 5xx, counting requests that never got a connection."""
    if stats.requests < thresholds.min_requests or stats.errors_5xx / stats.requests < thresholds.upstream_503_share:
        return
    by_flag = {"UO": stats.rejected, "UH": stats["upstream_cx_none_healthy"],
               "UF": stats["upstream_rq_pending_failure_eject"], "UT": stats["upstream_rq_timeout"]}
    by_flag["upstream 5xx"] = max(stats.errors_5xx - sum(by_flag.values()), 0)
    breakdown = ", ".join(f"{flag} {count}" for flag, count in by_flag.items() if count)
    yield codes.finding(
        "MB4002", origin=f"Pod {upstream.target}", pod=str(upstream.target), service=upstream.name.service,
        percent=_percent(stats.errors_5xx, stats.requests), errors=stats.errors_5xx, total=stats.requests,
        breakdown=breakdown,
        evidence={"cluster": stats.name, "requests": stats.requests, "upstream_rq_total": stats.total,
                  "upstream_rq_5xx": stats.errors_5xx, "upstream_rq_503": stats.errors_503,
                  "upstream_rq_retry": stats.retries, "by_flag": by_flag,
                  **{o.counter: stats[o.counter] for o in OVERFLOWS}},
        remediation=_share_remediation(upstream))


def passthrough_findings(target: PodRef, stats: ClusterStats | None, hosts: ClusterHosts | None,
                         thresholds: Thresholds) -> Iterator[Finding]:
    """MB4029: calls that left the mesh through PassthroughCluster (ALLOW_ANY) and failed to connect or timed out.

    istiod builds PassthroughCluster as ORIGINAL_DST (core/cluster_builder.go buildDefaultPassthroughCluster), so
    /clusters lists one host per destination address called: the finding names the failing ones."""
    failed = (stats["upstream_cx_connect_fail"] + stats["upstream_rq_timeout"] if stats else
              hosts.total("cx_connect_fail") + hosts.total("rq_timeout") if hosts else 0)
    attempts = stats["upstream_cx_total"] if stats else (hosts.total("cx_total") if hosts else 0)
    if not significant(failed, attempts, thresholds):
        return
    failing = sorted((h for h in (hosts.hosts if hosts else ()) if h["cx_connect_fail"] or h["rq_timeout"]),
                     key=lambda h: -(h["cx_connect_fail"] + h["rq_timeout"]))
    where = ", ".join(h.address for h in failing[:3]) + (f" and {len(failing) - 3} more" if len(failing) > 3 else "")
    cause = FAILURE_MODES["MB4029"].cause("external-unreachable")
    yield codes.finding("MB4029", origin=f"Pod {target}", pod=str(target), count=failed,
                        destinations=where or "addresses not listed", cause=cause.state,
                        evidence={"cluster": PASSTHROUGH, "failed": failed, "connections": attempts,
                                  "destinations": [h.address for h in failing]},
                        remediation=cause.remediation(pod=target.name, namespace=target.namespace))


def _share_remediation(upstream: Upstream) -> Remediation:
    # Envoy's access log carries the response flag of every failed request (usage.rst): it names the mode.
    return Remediation("Read the response flags of the failures in the caller's access log; each flag has its own "
                       "finding and first step (docs/response-flags.md)",
                       command=f"kubectl -n {upstream.target.namespace} logs {upstream.target.name} -c istio-proxy "
                               "--tail=500")


def _percent(part: int, whole: int) -> str:
    return f"{round(100 * part / whole, 1):g}"
