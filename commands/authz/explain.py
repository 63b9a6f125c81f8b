"""Why a workload answers ``403 RBAC: access denied``: the policies that can deny, and sources that cannot match.

``explain_rbac_denials`` is what a check that saw RBAC denials on a workload (Envoy's
``rbac.denied`` counters, ``response_code_details: rbac_access_denied_matched_policy[...]``) calls to
name the AuthorizationPolicies behind them; ``unmatchable_sources`` finds principals and service
accounts that no workload of this mesh can present, so an ALLOW policy naming them allows nobody.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from commands import codes
from commands.authz.evaluate import (
    Caller,
    Decision,
    Request,
    TrustDomains,
    Verdict,
    Workload,
    decide,
    selecting_policies,
)
from commands.authz.policy import Action, Policy, policies_in
from commands.cluster.snapshot import Resource, Snapshot
from commands.findings import Finding, Remediation
from commands.shapes import mapping

BUILT_IN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True)
class DenialCause:
    """One policy that denies (or can deny) requests to the workload, in a sentence."""

    policy: str
    """``namespace/name`` of the AuthorizationPolicy."""
    action: Action
    rule: int | None
    reason: str
    inspect_command: str


@dataclass(frozen=True)
class DenialExplanation:
    workload: Workload
    policies: tuple[Policy, ...]
    """Every policy attached to the workload, dry-run ones included."""
    causes: tuple[DenialCause, ...]
    """Most decisive first: a DENY matching everything, an ALLOW without rules, then the rest."""
    decision: Decision | None
    """The verdict for the caller and request given, if any."""
    check_command: str
    """``istioctl x authz check``: the RBAC config Envoy really holds for the pod."""


@dataclass(frozen=True)
class Unmatchable:
    """A ``principals``/``serviceAccounts`` value of a rule that no workload of this mesh presents."""

    policy: Policy
    rule: int
    field: str
    value: str
    reason: str


def root_namespace(snapshot: Snapshot) -> str:
    """MeshConfig ``rootNamespace``, which defaults to istiod's namespace: its policies apply mesh-wide."""
    return str(snapshot.mesh_config.get("rootNamespace") or snapshot.istio_namespace)


def explain_rbac_denials(snapshot: Snapshot, namespace: str, labels: Mapping[str, str], *, pod: str | None = None,
                         caller: Caller | None = None, request: Request | None = None) -> DenialExplanation:
    """The policies that make the workload (``namespace`` + pod ``labels``) deny requests, and why.

    With a ``caller`` (and optionally a ``request``), ``decision`` says whether that caller is
    allowed and which policy and rule decide it.  No causes means no enforced policy can deny there.
    """
    workload = Workload(namespace, dict(labels), pod)
    trust = TrustDomains.of(snapshot.mesh_config)
    applying = selecting_policies(policies_in(snapshot), workload, root_namespace(snapshot))
    causes = _causes(applying, unmatchable_sources(snapshot, applying))
    decision = decide(applying, caller, request or Request(), trust) if caller is not None else None
    if decision is not None and decision.verdict is Verdict.DENIED and decision.policy is not None:
        causes = [c for c in causes if c.policy == decision.policy.qualified_name] + [
            c for c in causes if c.policy != decision.policy.qualified_name]
    target = f"{pod} -n {namespace}" if pod else f"<pod> -n {namespace}"
    return DenialExplanation(workload, tuple(applying), tuple(causes), decision,
                             check_command=f"istioctl experimental authz check {target}")


# Causes that deny every request come first: they explain a 403 whoever calls.
EVERY_REQUEST, SOME_REQUESTS = 0, 1


def _causes(applying: list[Policy], unmatchable: list[Unmatchable]) -> list[DenialCause]:
    enforced = [p for p in applying if p.enforced]
    ranked: list[tuple[int, DenialCause]] = []
    for policy in (p for p in enforced if p.action is Action.DENY):
        everything = next((r for r in policy.rules if r.matches_everything), None)
        if everything is not None:
            ranked.append((EVERY_REQUEST, _cause(policy, everything.index, "matches every request")))
        elif policy.rules:
            ranked.append((SOME_REQUESTS, _cause(policy, None, f"denies what its {len(policy.rules)} rule(s) match")))
    allows = [p for p in enforced if p.action is Action.ALLOW]
    if allows and not any(p.rules for p in allows):
        ranked.extend((EVERY_REQUEST, _cause(p, None, "has no rules, so it denies every request")) for p in allows)
    elif allows:
        names = ", ".join(p.qualified_name for p in allows)
        ranked.extend((SOME_REQUESTS, _cause(p, None, f"applies, so a request no rule of {names} matches is denied"))
                      for p in allows)
    for item in unmatchable:
        ranked.append((SOME_REQUESTS, _cause(item.policy, item.rule,
                                             f"names {item.field} {item.value}, which {item.reason}")))
    return [cause for _, cause in sorted(ranked, key=lambda pair: pair[0])]


def _cause(policy: Policy, rule: int | None, what: str) -> DenialCause:
    return DenialCause(policy.qualified_name, policy.action, rule, what, policy.inspect_command)


def unmatchable_sources(snapshot: Snapshot, policies: Iterable[Policy]) -> list[Unmatchable]:
    """Principals and service accounts in enforced rules that no workload of this mesh can present.

    A principal is ``<trust domain>/ns/<namespace>/sa/<account>`` (pilot/pkg/security/trustdomain);
    one in another trust domain, a namespace that does not exist, or an account no pod,
    Deployment or WorkloadEntry runs as, matches no caller today.
    """
    trust = TrustDomains.of(snapshot.mesh_config)
    identities = _Identities(snapshot)
    found: list[Unmatchable] = []
    for policy in (p for p in policies if p.enforced):
        for rule in policy.rules:
            for clause in rule.sources:
                for name in ("principals", "serviceAccounts"):
                    for value in clause.fields[name].values if name in clause.fields else ():
                        reason = identities.why_unmatchable(name, value, policy, trust)
                        if reason:
                            found.append(Unmatchable(policy, rule.index, name[:-1], value, reason))
    return found


class _Identities:
    """Which namespaces exist and which service accounts workloads run as."""

    def __init__(self, snapshot: Snapshot):
        self.namespaces_known = bool(snapshot.of_kind("Namespace"))
        # Kubernetes creates these itself; a snapshot (or a set of files) need not list them.
        self.namespaces = set(snapshot.namespaces()) | BUILT_IN_NAMESPACES | {snapshot.istio_namespace}
        self.accounts: set[tuple[str, str]] = set()
        for pod in snapshot.of_kind("Pod"):
            self.accounts.add((pod.namespace or "", str(pod.spec.get("serviceAccountName") or "default")))
        for deployment in snapshot.of_kind("Deployment"):
            template = mapping(mapping(deployment.spec.get("template")).get("spec"))
            self.accounts.add((deployment.namespace or "", str(template.get("serviceAccountName") or "default")))
        for entry in snapshot.of_kind("WorkloadEntry"):
            self.accounts.add((entry.namespace or "", str(entry.spec.get("serviceAccount") or "default")))
        self.workload_namespaces = {ns for ns, _ in self.accounts}

    def why_unmatchable(self, field: str, value: str, policy: Policy, trust: TrustDomains) -> str | None:
        if field == "serviceAccounts":
            namespace, _, account = value.rpartition("/")
            return self._account(namespace or policy.namespace, account)
        parts = value.split("/")
        if "*" in value and len(parts) != 5:
            return None
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            return "is not of the form <trust domain>/ns/<namespace>/sa/<service account>"
        if parts[0] != "*" and not trust.ours(parts[0]):
            aliases = f" nor an alias ({', '.join(trust.aliases)})" if trust.aliases else " and has no alias"
            return f"belongs to trust domain {parts[0]}, while the mesh's is {trust.domain}{aliases}"
        if "*" in parts[2] or "*" in parts[4]:
            return None
        return self._account(parts[2], parts[4])

    def _account(self, namespace: str, account: str) -> str | None:
        if "*" in namespace or "*" in account:
            return None
        if self.namespaces_known and namespace not in self.namespaces:
            return f"is in namespace {namespace}, and no such namespace exists"
        if namespace in self.workload_namespaces and (namespace, account) not in self.accounts:
            return f"no pod, Deployment or WorkloadEntry in {namespace} runs as"
        return None


def denial_findings(snapshot: Snapshot, pod: Resource, *, denied: int | None = None) -> list[Finding]:
    """MB7004 for a pod whose Envoy denied requests with RBAC: one finding per deciding policy."""
    explanation = explain_rbac_denials(snapshot, pod.namespace or "", pod.labels, pod=pod.name)
    seen = f"denied {denied} requests" if denied is not None else "denies requests"
    if not explanation.causes:
        return []
    return [codes.finding(
        "MB7004", origin=f"Pod {pod.qualified_name}", pod=pod.qualified_name, seen=seen,
        policy=cause.policy, action=str(cause.action), why=cause.reason,
        evidence={"policy": cause.policy, "rule": cause.rule, "policies": [p.qualified_name
                                                                           for p in explanation.policies]},
        remediation=Remediation(
            f"Read the policy, then compare with the RBAC config Envoy holds: {explanation.check_command}. "
            "Fix the rule the callers need; a restart loads the same policy.",
            command=cause.inspect_command))
        for cause in explanation.causes]
