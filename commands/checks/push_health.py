"""istiod's push health from its ``/metrics``: listener conflicts and a push queue that does not drain.

Both are state istiod holds now, readable without Prometheus:

- ``pilot_conflict_*`` gauges count the listeners istiod had to drop in its last push context because two services
  claim the same port (pilot/pkg/model/push_context.go, ``inboundListenerConflicts``/``outboundListenerConflicts``;
  pilot/pkg/networking/core/listener.go decides which one wins).  Traffic for the losing service goes to the winner's
  listener: a 503 or a TCP reset that no VirtualService explains.
- ``pilot_proxy_queue_time`` is how long a proxy waited in istiod's push queue before its push started
  (pilot/pkg/xds/monitoring.go, observed in pushqueue.go).  Pushes are debounced for at most PILOT_DEBOUNCE_MAX
  (10 s by default, pilot/pkg/features/tuning.go) and at most PILOT_PUSH_THROTTLE run at once, so a p99 wait above the
  debounce ceiling means istiod cannot keep up: proxies receive config (and fixes) minutes late.  The histogram is
  cumulative since istiod started; Prometheus's rate (MB6022) shows the last minutes.
"""

from __future__ import annotations

from collections.abc import Iterator

from commands import codes
from commands.checks.istiod_metrics import Sample, histogram_quantile, total
from commands.findings import Finding, Remediation

CONFLICT_GAUGES = {
    "pilot_conflict_inbound_listener": "inbound",
    "pilot_conflict_outbound_listener_tcp_over_current_tcp": "outbound TCP over TCP",
    "pilot_conflict_outbound_listener_tcp_over_current_http": "outbound TCP over HTTP",
    "pilot_conflict_outbound_listener_http_over_current_tcp": "outbound HTTP over TCP",
}
QUEUE_HISTOGRAM = "pilot_proxy_queue_time"
DEBOUNCE_MAX_SECONDS = 10.0
"""PILOT_DEBOUNCE_MAX's default (pilot/pkg/features/tuning.go)."""
PUSH_METRICS = frozenset({*CONFLICT_GAUGES, f"{QUEUE_HISTOGRAM}_bucket"})


def push_findings(samples: list[Sample], origin: str, istio_namespace: str) -> Iterator[Finding]:
    conflicts = {what: int(total(samples, name)) for name, what in CONFLICT_GAUGES.items() if total(samples, name)}
    if conflicts:
        yield codes.finding(
            "MB2013", origin=origin, origin_name=origin.split(" ", 1)[-1], count=sum(conflicts.values()),
            kinds=", ".join(f"{count} {what}" for what, count in conflicts.items()), evidence=conflicts,
            remediation=Remediation(
                "Find the services that share a port (istioctl analyze names Services with conflicting ports; two "
                "ServiceEntries or a ServiceEntry and a Service on one address:port are the usual cause) and give "
                "them distinct ports or hosts; nothing needs a restart",
                command="istioctl analyze --all-namespaces"))
    p99 = histogram_quantile(samples, QUEUE_HISTOGRAM, 0.99)
    if p99 is not None and p99 > DEBOUNCE_MAX_SECONDS:
        yield codes.finding(
            "MB2014", origin=origin, origin_name=origin.split(" ", 1)[-1], p99=f"{p99:.0f}", ceiling=f"{DEBOUNCE_MAX_SECONDS:.0f}",
            evidence={"pilot_proxy_queue_time_p99_seconds": round(p99, 3)},
            remediation=Remediation(
                "istiod is saturated: give it CPU (and more replicas), and cut the config each proxy gets with "
                "Sidecar resources (exportTo / egress hosts) so a push costs less; restarting proxies adds pushes",
                command=f"kubectl -n {istio_namespace} top pods -l app=istiod"))
