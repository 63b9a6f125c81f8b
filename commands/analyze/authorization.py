"""AuthorizationPolicies that deny traffic nobody meant to deny (MB7001-MB7003).

The reasoning is commands.authz's (istiod's selection and rule semantics); this module picks
the workloads and turns its answers into findings whose advice names the policy and how to
test it.  Dry-run (``istio.io/dry-run``) and AUDIT policies never deny, so they are not reported.
"""

from __future__ import annotations

from collections.abc import Iterable

from commands.analyze import analyzer, report
from commands.analyze.workload_selector import MeshWorkloads
from commands.authz.evaluate import Workload, selecting_policies
from commands.authz.explain import root_namespace, unmatchable_sources
from commands.authz.policy import Action, Policy, policies_in
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Resource
from commands.cluster.sources.files import OFFLINE_DEFAULTS_SOURCE
from commands.findings import Finding, Remediation

MAX_NAMED_PODS = 3


@analyzer("authz.PolicyEffectAnalyzer", inputs=("AuthorizationPolicy", "Pod", "Namespace"))
def policy_effects(ctx: CheckContext) -> list[Finding]:
    """MB7001 ALLOW without rules, MB7002 DENY matching everything, MB7003 principals that cannot match."""
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
                   evidence={"pods": [p.qualified_name for p in stranded]},
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
                   workloads=describe(selected), evidence={"pods": [p.qualified_name for p in selected]},
                   remediation=_advice(policy, selected[0],
                                       f"Give rule {rule.index} the from/to/when that name what must be denied"))]


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
