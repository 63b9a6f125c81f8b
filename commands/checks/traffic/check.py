"""The ``traffic-policy`` check: mesh configuration that fails requests by design, read from the objects alone.

Each rule lives in its own module with its sources: ``faults`` (VirtualService fault injection left on, Envoy
flags FI/DI), ``tls_modes`` (DestinationRule TLS modes that contradict the destination's PeerAuthentication
or its missing sidecar) and ``rule_precedence`` (several DestinationRules for one host: the one istiod uses per
caller namespace, and the settings of the others that do nothing).  It needs no Envoy or istiod endpoint, so it
also speaks when the sidecars cannot be read; with no VirtualService or DestinationRule there is nothing that can
fail by design, and it stays silent.
"""

from __future__ import annotations

from collections.abc import Mapping

from commands.authz.explain import root_namespace
from commands.checks.registry import CheckContext, check
from commands.checks.traffic.faults import fault_findings
from commands.checks.traffic.rule_precedence import precedence_findings
from commands.checks.traffic.tls_modes import tls_mode_findings
from commands.cluster.pods import sidecar_spec
from commands.findings import Finding


@check("traffic-policy", kinds=("VirtualService", "DestinationRule", "PeerAuthentication", "Service", "Pod"),
       summary="configuration that fails requests by design: VirtualService fault injection left on (FI/DI), "
               "DestinationRule TLS modes that contradict STRICT mTLS or a missing sidecar, several "
               "DestinationRules for one host (which one each caller namespace gets)")
def traffic_policy(ctx: CheckContext) -> list[Finding]:
    snapshot = ctx.snapshot
    findings: list[Finding] = []
    for virtual_service in snapshot.of_kind("VirtualService"):
        if not ctx.in_scope(virtual_service.namespace):
            continue
        findings.extend(fault_findings(virtual_service))
    # A rule in any namespace may govern a Service in scope (exportTo defaults to every namespace), so rules are
    # read mesh-wide and the Services they reach are the ones in scope.
    services = [s for s in snapshot.of_kind("Service") if ctx.in_scope(s.namespace)]
    pods = snapshot.of_kind("Pod")
    policies = snapshot.of_kind("PeerAuthentication")
    root = root_namespace(snapshot)
    rules = snapshot.of_kind("DestinationRule")
    for rule in rules:
        findings.extend(tls_mode_findings(rule, services, pods, policies, root))
    # The callers whose view matters: namespaces that run Envoy proxies, sidecars and gateways alike (a gateway looks
    # DestinationRules up from its own namespace, as a sidecar does), with their pods' labels (a rule's
    # workloadSelector picks among them; `istio: ingressgateway` is a common one), plus, in precedence_findings, the
    # rules' own namespaces.
    callers: dict[str, list[Mapping[str, str]]] = {}
    for pod in pods:
        if pod.namespace and sidecar_spec(pod) is not None:
            callers.setdefault(pod.namespace, []).append(pod.labels)
    findings.extend(precedence_findings(rules, services, callers, root, snapshot.mesh_config))
    return findings
