"""AuthorizationPolicies that deny traffic nobody meant to deny (MB7001-MB7003, MB7005).

The reasoning is commands.authz's (istiod's selection and rule semantics); this module picks
the workloads and turns its answers into findings whose advice names the policy and how to
test it.  Dry-run (``istio.io/dry-run``) and AUDIT policies never deny, so they are not reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from commands.analyze import AFFECTED_NAMESPACES, analyzer, report
from commands.analyze.service import WELL_KNOWN_TCP_PORTS
from commands.analyze.workload_selector import MeshWorkloads
from commands.authz.evaluate import Workload, selecting_policies
from commands.authz.explain import root_namespace, unmatchable_sources
from commands.authz.policy import HTTP_ONLY_FIELDS, Action, Policy, Rule, policies_in
from commands.checks.registry import CheckContext
from commands.cluster.selectors import matches
from commands.cluster.snapshot import Resource, Snapshot
from commands.cluster.sources.files import OFFLINE_DEFAULTS_SOURCE
from commands.findings import Finding, Remediation
from commands.shapes import mapping, mappings

MAX_NAMED_PODS = 3


@analyzer("authz.PolicyEffectAnalyzer", inputs=("AuthorizationPolicy", "Pod", "Namespace", "Service"))
def policy_effects(ctx: CheckContext) -> list[Finding]:
    """MB7001 ALLOW without rules, MB7002 DENY matching everything, MB7003 principals that cannot match,
    MB7005 HTTP-only fields on a TCP port."""
    snapshot = ctx.snapshot
    policies = policies_in(snapshot)
    if not policies:
        return []
    root = root_namespace(snapshot)
    # The stand-in ingress pod of a files-only run is not a workload anyone calls.
    pods = [p for p in MeshWorkloads(snapshot).index.pods if p.source != OFFLINE_DEFAULTS_SOURCE]
    by_namespace: dict[str, list[Policy]] = {}
    for policy in policies:
        by_namespace.setdefault(policy.namespace, []).append(policy)
    applying = {id(pod): selecting_policies([*by_namespace.get(root, ()), *by_namespace.get(pod.namespace or "", ())]
                                            if pod.namespace != root else by_namespace.get(root, []),
                                            _workload(pod), root)
                for pod in pods}
    findings: list[Finding] = []
    for policy in (p for p in policies if p.enforced):
        selected = [pod for pod in pods if any(p is policy for p in applying[id(pod)])]
        if not selected:
            continue  # IST0127 reports a policy that selects nothing
        findings.extend(_allow_without_rules(policy, selected, applying))
        findings.extend(_deny_everything(policy, selected))
        findings.extend(_http_fields_on_tcp(policy, selected, snapshot))
    findings.extend(_unmatchable(ctx, policies))
    return findings


def _workload(pod: Resource) -> Workload:
    return Workload(pod.namespace or "", dict(pod.labels), pod.name)


def _allow_without_rules(policy: Policy, selected: list[Resource], applying: dict[int, list[Policy]]) -> list[Finding]:
    if policy.action is not Action.ALLOW or policy.rules:
        return []
    # Another enforced ALLOW policy with rules on the same pod still allows what it matches.
    stranded = [pod for pod in selected
                if not any(p.enforced and p.action is Action.ALLOW and p.rules for p in applying[id(pod)])]
    if not stranded:
        return []
    return [report("MB7001", policy.resource, policy=policy.qualified_name, workloads=describe(stranded),
                   evidence=_pods_evidence(stranded),
                   remediation=_advice(policy, stranded[0],
                                       "Add the rules the callers need (rules: [{}] would allow every request), or "
                                       "annotate the policy istio.io/dry-run=true to observe before enforcing"))]


def _deny_everything(policy: Policy, selected: list[Resource]) -> list[Finding]:
    if policy.action is not Action.DENY:
        return []
    rule = next((r for r in policy.rules if r.matches_everything), None)
    if rule is None:
        return []
    return [report("MB7002", policy.resource, policy=policy.qualified_name, rule=rule.index,
                   workloads=describe(selected), evidence=_pods_evidence(selected),
                   remediation=_advice(policy, selected[0],
                                       f"Give rule {rule.index} the from/to/when that name what must be denied"))]


# Protocols Envoy proxies as opaque TCP (istio/istio pkg/config/protocol: TCP, TLS, HTTPS, Mongo, MySQL,
# Redis are not HTTP); on their filter chains the RBAC filter is a network filter that sees no HTTP
# attributes (pilot/pkg/security/authz/model/generator.go "is HTTP only"; model.go checkError).
TCP_PROTOCOLS = frozenset({"tcp", "tls", "https", "mongo", "mysql", "redis"})


def tcp_ports(pod: Resource, snapshot: Snapshot) -> list[tuple[Resource, int]]:
    """(Service, workload port) for each Service port selecting ``pod`` whose protocol is not HTTP."""
    found: list[tuple[Resource, int]] = []
    for service in snapshot.of_kind("Service", pod.namespace):
        selector = mapping(service.spec.get("selector"))
        if not selector or not matches({str(k): str(v) for k, v in selector.items()}, pod.labels):
            continue
        for port in mappings(service.spec.get("ports")):
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, int) and _is_tcp(port):
                found.append((service, target))
    return found


def _is_tcp(port: Mapping[str, Any]) -> bool:
    name = str(port.get("appProtocol") or port.get("name") or "")
    return name.split("-", 1)[0].lower() in TCP_PROTOCOLS or (not name and port.get("port") in WELL_KNOWN_TCP_PORTS)


def _http_fields_on_tcp(policy: Policy, selected: list[Resource], snapshot: Snapshot) -> list[Finding]:
    """MB7005: on a TCP port an ALLOW rule with HTTP-only fields is skipped and a DENY rule drops them.

    https://istio.io/latest/docs/tasks/security/authorization/authz-tcp/ shows the DENY case: a
    ``methods`` match turns into a rule denying every TCP connection.
    """
    if policy.action not in (Action.ALLOW, Action.DENY):
        return []
    findings: list[Finding] = []
    for rule in (r for r in policy.rules if r.http_only):
        seen: set[tuple[str, int]] = set()
        for pod in selected:
            for service, port in tcp_ports(pod, snapshot):
                if (service.qualified_name, port) in seen or not _rule_covers_port(rule, port):
                    continue
                seen.add((service.qualified_name, port))
                consequence = ("there the rule is skipped and allows no connection" if policy.action is Action.ALLOW
                               else "there the rule drops them and denies every connection its other fields match")
                findings.append(report(
                    "MB7005", policy.resource, action=str(policy.action), policy=policy.qualified_name,
                    rule=rule.index, fields=", ".join(_http_fields(rule)), port=port,
                    service=service.qualified_name, consequence=consequence,
                    evidence={AFFECTED_NAMESPACES: [service.namespace]},
                    remediation=_advice(policy, pod, "Move the HTTP-only fields to a rule limited to the HTTP "
                                                     "ports (to.operation.ports), or name the port for its "
                                                     "real protocol")))
    return findings


def _rule_covers_port(rule: Rule, port: int) -> bool:
    """A rule whose operations all name ports other than ``port`` never applies there."""
    listed = [o.fields["ports"] for o in rule.operations if "ports" in o.fields]
    if not listed or len(listed) < len(rule.operations):
        return True
    return any(str(port) in values.values or (not values.values and str(port) not in values.not_values)
               for values in listed)


def _http_fields(rule: Rule) -> list[str]:
    names = {name for clause in (*rule.sources, *rule.operations) for name in clause.fields if name in HTTP_ONLY_FIELDS}
    names.update(c.key for c in rule.conditions if c.http_only)
    return sorted(names)


def _unmatchable(ctx: CheckContext, policies: list[Policy]) -> Iterable[Finding]:
    for item in unmatchable_sources(ctx.snapshot, policies):
        policy = item.policy
        consequence = ("the callers it means to allow are denied" if policy.action is Action.ALLOW
                       else f"the callers it means to {policy.action.lower()} are not matched")
        yield report("MB7003", policy.resource, action=str(policy.action), policy=policy.qualified_name,
                     rule=item.rule, field=item.field, value=item.value, reason=item.reason, consequence=consequence,
                     remediation=Remediation(
                         f"Correct the {item.field} to the identity the caller runs as: `kubectl get pod -n <ns> "
                         "<caller> -o jsonpath={.spec.serviceAccountName}` and the mesh's trust domain give "
                         "<trust domain>/ns/<ns>/sa/<account>",
                         command=policy.inspect_command))


def _pods_evidence(pods: list[Resource]) -> dict[str, Any]:
    # A root-namespace policy denies in other namespaces: `analyze -n NS` must still show it there.
    return {"pods": [p.qualified_name for p in pods], AFFECTED_NAMESPACES: sorted({p.namespace or "" for p in pods})}


def _advice(policy: Policy, pod: Resource, fix: str) -> Remediation:
    return Remediation(
        f"{fix}. Test with `istioctl experimental authz check {pod.name} -n {pod.namespace}` (the RBAC rules its "
        "Envoy holds) and a request from an affected caller; restarting pods loads the same policy.",
        command=policy.inspect_command)


def describe(pods: list[Resource]) -> str:
    """``pod payments-1 in prod`` / ``3 pods in prod (a, b, c)`` / ``5 pods in 2 namespaces (…, +2 more)``."""
    names = [p.name for p in pods]
    namespaces = sorted({p.namespace or "" for p in pods})
    where = f"in {namespaces[0]}" if len(namespaces) == 1 else f"in {len(namespaces)} namespaces"
    if len(pods) == 1:
        return f"pod {names[0]} {where}"
    shown = ", ".join(names[:MAX_NAMED_PODS]) + (f", +{len(names) - MAX_NAMED_PODS} more"
                                                  if len(names) > MAX_NAMED_PODS else "")
    return f"{len(pods)} pods {where} ({shown})"
