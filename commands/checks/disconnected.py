"""Proxies connected to no istiod: running pods with a sidecar that no istiod's ``/debug/syncz`` lists.

"If a proxy is missing from this list it means that it is not currently connected to an Istiod instance"
(https://istio.io/latest/docs/ops/diagnostic-tools/proxy-cmd/, about ``istioctl proxy-status``, which reads the
same syncz).  Such a proxy keeps serving the configuration it last accepted (Envoy's xDS protocol,
https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol) but gets no new config and, through istio-agent,
no renewed certificate from istiod's port 15012: when its certificate expires its mTLS calls fail.  When no
sidecar at all is connected, istiod is unreachable from the data plane (a NetworkPolicy or firewall on 15012, a
broken istiod Service, a revision whose istiod is gone) even though meshbot reached its monitoring port.

Judged only when every istiod asked answered (a proxy may hold its stream on the one that did not), and only for
proxies that have run past ``CONNECT_GRACE``: a starting istio-agent takes a moment to open its stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from commands import codes
from commands.cluster.pods import SIDECAR_CONTAINER, sidecar_spec, terminating
from commands.cluster.snapshot import Resource
from commands.findings import Finding, Remediation
from commands.times import parse_rfc3339_or_none

CONNECT_GRACE = timedelta(minutes=2)
"""Longer than a starting sidecar needs for its first push: the injection template's startup/readiness probes give
it about a minute (manifests/charts/istio-control/istio-discovery/files/injection-template.yaml)."""
MAX_PODS_NAMED = 5


def disconnected_findings(pods: Iterable[Resource], connected: set[tuple[str, str]], *,
                          now: datetime) -> Iterator[Finding]:
    """MB2016 when no running sidecar is connected, MB2015 for the ones that are not while others are.

    ``connected`` holds ``(pod name, namespace)`` of every proxy the istiods listed.
    """
    running = [p for p in pods if _settled_proxy(p, now)]
    missing = sorted((p for p in running if (p.name, p.namespace or "") not in connected),
                     key=lambda p: (p.namespace or "", p.name))
    if not missing:
        return
    names = ", ".join(p.qualified_name for p in missing[:MAX_PODS_NAMED])
    names += f" and {len(missing) - MAX_PODS_NAMED} more" if len(missing) > MAX_PODS_NAMED else ""
    first = missing[0]
    evidence = {"not_connected": [p.qualified_name for p in missing], "running_proxies": len(running),
                "connected_proxies": len(running) - len(missing)}
    remediation = Remediation(
        # The agent logs why its XDS stream fails (pkg/istio-agent/xds_proxy.go); a restart would ask the same
        # unreachable istiod for config and a first certificate, so it is not the first step.
        "Read why the proxy cannot reach istiod (its istio-proxy log names the XDS connection error) and check "
        "that port 15012 of istiod's Service is reachable from the pod's namespace (NetworkPolicies, the Service's "
        "endpoints, the revision the pod was injected for)",
        command=f"kubectl -n {first.namespace} logs {first.name} -c {SIDECAR_CONTAINER} --tail=50")
    if len(missing) == len(running):
        yield codes.finding("MB2016", origin="istiod /debug/syncz", count=len(missing), pods=names,
                            evidence=evidence, remediation=remediation)
    else:
        yield codes.finding("MB2015", origin="istiod /debug/syncz", count=len(missing), total=len(running),
                            pods=names, evidence=evidence, remediation=remediation)


def _settled_proxy(pod: Resource, now: datetime) -> bool:
    """A pod whose Envoy (sidecar or gateway) has been running past the grace period and is not going away."""
    if sidecar_spec(pod) is None or terminating(pod) or pod.status.get("phase") != "Running":
        return False
    statuses = [*(pod.status.get("containerStatuses") or ()), *(pod.status.get("initContainerStatuses") or ())]
    for status in statuses:
        if status.get("name") == SIDECAR_CONTAINER:
            started = parse_rfc3339_or_none(((status.get("state") or {}).get("running") or {}).get("startedAt"))
            return started is not None and now - started >= CONNECT_GRACE
    return False
