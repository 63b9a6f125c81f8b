"""DestinationRule TLS modes that contradict the destination: plaintext to STRICT pods, mTLS to pods without a sidecar.

With auto mutual TLS (Istio's default) a client sidecar picks mTLS or plaintext by what the destination accepts;
an explicit ``trafficPolicy.tls.mode`` overrides that choice.  Istio's own troubleshooting page names both
conflicts as the cause of "503 errors after setting destination rule"
(https://istio.io/latest/docs/ops/common-problems/network-issues/#503-errors-after-setting-destination-rule):

- ``DISABLE`` towards pods whose PeerAuthentication is STRICT: the server's inbound listener has no plaintext
  filter chain (pilot/pkg/networking/core/listener_builder.go, mTLS STRICT), so Envoy closes every connection;
- ``ISTIO_MUTUAL`` towards pods without a sidecar: nobody answers the handshake (the caller's
  ``ssl.connection_error``, MB4015's plaintext-peer cause when the sidecar's stats are read).

Which mode applies to a port and subset follows istio/istio pilot/pkg/networking/core/cluster_traffic_policy.go
(a subset's trafficPolicy overrides the top level; portLevelSettings override the policy they belong to).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from commands import codes
from commands.checks.traffic.peer_authentication import STRICT, peer_mode
from commands.cluster.pods import has_sidecar
from commands.cluster.selectors import matches
from commands.cluster.snapshot import Resource
from commands.findings import Finding, Remediation

DEFAULT_DOMAIN = "cluster.local"
ISTIO_MUTUAL, DISABLE = "ISTIO_MUTUAL", "DISABLE"
MAX_PODS_NAMED = 3


def tls_mode_findings(rule: Resource, services: Sequence[Resource], pods: Sequence[Resource],
                      policies: Sequence[Resource], root_namespace: str) -> Iterator[Finding]:
    """Conflicts between ``rule`` and the pods of the Services its host names."""
    host = str(rule.spec.get("host") or "")
    for service in services:
        if not host_selects(host, rule.namespace or "default", service):
            continue
        backing = [p for p in pods if _backs(service, p)]
        for subset, policy, labels in _policies(rule):
            chosen = [p for p in backing if matches(labels, p.labels)]
            for port in service.spec.get("ports") or ():
                mode = _tls_mode(policy, port.get("port"))
                if mode == DISABLE:
                    yield from _plaintext_to_strict(rule, service, subset, port, chosen, policies, root_namespace)
                elif mode == ISTIO_MUTUAL and chosen and not any(has_sidecar(p) for p in chosen):
                    yield codes.finding(
                        "MB5011", origin=rule.origin, reference=rule.source, destination_rule=rule.origin,
                        host=_where(service, subset), port=port.get("port"), pods=_names(chosen),
                        evidence={"tls_mode": mode, "service": service.qualified_name, "subset": subset,
                                  "pods_without_sidecar": [p.name for p in chosen]},
                        remediation=_fix(rule, service, "the pods have no sidecar: inject one (label the namespace "
                                         "and roll the workload once istiod is healthy), or drop tls.mode "
                                         "ISTIO_MUTUAL so auto mutual TLS sends plaintext to them"))


def host_selects(host: str, namespace: str, service: Resource) -> bool:
    """Whether a DestinationRule host (short names resolve in the rule's namespace) covers the Service."""
    fqdn = f"{service.name}.{service.namespace}.svc.{DEFAULT_DOMAIN}"
    wanted = host if "." in host or host.startswith("*") else f"{host}.{namespace}.svc.{DEFAULT_DOMAIN}"
    if wanted.startswith("*"):
        return fqdn.endswith(wanted[1:])
    return wanted == fqdn


def _plaintext_to_strict(rule: Resource, service: Resource, subset: str | None, port: Mapping[str, Any],
                         chosen: Sequence[Resource], policies: Sequence[Resource],
                         root_namespace: str) -> Iterator[Finding]:
    strict = [(p, decided) for p in chosen if has_sidecar(p)
              and (decided := peer_mode(p, target_port(service, port, p), policies, root_namespace)).mode == STRICT]
    if not strict:
        return
    deciding = sorted({decided.policy for _, decided in strict})
    yield codes.finding(
        "MB5010", origin=rule.origin, reference=rule.source, destination_rule=rule.origin,
        host=_where(service, subset), port=port.get("port"), pods=_names([p for p, _ in strict]),
        policy="STRICT from " + ", ".join(deciding),
        evidence={"tls_mode": DISABLE, "service": service.qualified_name, "subset": subset,
                  "strict_pods": [p.name for p, _ in strict], "peer_authentication": deciding},
        # Never PERMISSIVE: relaxing the server hides the conflict and drops the identity AuthorizationPolicies
        # match on; the DestinationRule is the part that is wrong.
        remediation=_fix(rule, service, "remove tls.mode DISABLE (auto mutual TLS then sends mTLS) or set it to "
                                        "ISTIO_MUTUAL; do not relax the PeerAuthentication"))


def target_port(service: Resource, port: Mapping[str, Any], pod: Resource) -> int | None:
    """The container port a Service port forwards to (a named targetPort is looked up in the pod)."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for section in ("containers", "initContainers"):
        for container in pod.spec.get(section) or ():
            for declared in container.get("ports") or ():
                if declared.get("name") == target:
                    return int(declared.get("containerPort"))
    return None


def _policies(rule: Resource) -> Iterator[tuple[str | None, Mapping[str, Any], Mapping[str, str]]]:
    """(subset, the traffic policy that applies to it, its labels): the top level first, then each subset."""
    top = rule.spec.get("trafficPolicy") or {}
    yield None, top, {}
    for subset in rule.spec.get("subsets") or ():
        own = subset.get("trafficPolicy") or {}
        # A subset's policy replaces the top level's field by field (cluster_traffic_policy.go, MergeTrafficPolicy).
        merged = {**top, **{k: v for k, v in own.items() if v}}
        yield str(subset.get("name")), merged, subset.get("labels") or {}


def _tls_mode(policy: Mapping[str, Any], port: Any) -> str | None:
    for setting in policy.get("portLevelSettings") or ():
        if (setting.get("port") or {}).get("number") == port and (setting.get("tls") or {}).get("mode"):
            return str(setting["tls"]["mode"])
    return (policy.get("tls") or {}).get("mode")


def _backs(service: Resource, pod: Resource) -> bool:
    selector = service.spec.get("selector") or {}
    running = pod.status.get("phase") not in ("Succeeded", "Failed")
    return bool(selector) and pod.namespace == service.namespace and running and matches(selector, pod.labels)


def _where(service: Resource, subset: str | None) -> str:
    name = f"{service.name}.{service.namespace}"
    return f"{name} subset {subset}" if subset else name


def _names(pods: Sequence[Resource]) -> str:
    shown = ", ".join(p.name for p in pods[:MAX_PODS_NAMED])
    return shown + (f" and {len(pods) - MAX_PODS_NAMED} more" if len(pods) > MAX_PODS_NAMED else "")


def _fix(rule: Resource, service: Resource, what: str) -> Remediation:
    return Remediation(f"Fix {rule.origin}: {what}",
                       command=f"istioctl x describe service {service.name} -n {service.namespace}")
