"""What a remediation needs from the mesh before it can work, and whether the mesh has it now.  Pure.

A step is classified by its effect (it changes mesh config, creates pods with sidecars, creates pods without
one, changes istiod itself, or only reads).  Each effect depends on parts of the control plane, and findings
say which of those parts are failing.  ``MeshHealth.blockers`` answers "can this step work now?", and
``gate`` turns a step that cannot into "fix that first", so no copy-paste command that would deepen the
outage is ever offered as the first step.

The dependency edges, each with its source:

- **Mesh config needs istiod.**  Envoy only learns new configuration over xDS from istiod; while istiod is
  away every proxy keeps serving what it last accepted (https://www.envoyproxy.io/docs/envoy/latest/api-docs/
  xds_protocol, istio pilot/pkg/xds/ads.go).  A PeerAuthentication or DestinationRule written to the API
  server meanwhile changes no traffic.
- **New pods with sidecars need istiod and its CA.**  istio-agent asks the CA for the workload's *first*
  certificate over istiod's port 15012 when the pod starts (pkg/istio-agent/agent.go, security/pkg/nodeagent/
  caclient), and Envoy's listeners stay warming until SDS delivers it and xDS delivers config, so the pod's
  readiness probe (``/healthz/ready``, pilot/cmd/pilot-agent/status/ready) fails.  A pod deleted while istiod
  or its CA is failing is replaced by one that never becomes Ready: the restart turns an ageing certificate
  into an outage hours early.  A self-signed root that has expired makes every certificate the CA issues
  useless to its peers (Istio "root certificate expiry", istio.io/latest/docs/ops/configuration/security/
  root-transition/), so it counts as a failing CA for new pods.
- **New pods in injected namespaces need the injection webhook.**  Istio's sidecar-injector webhook has
  ``failurePolicy: Fail`` (manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml):
  while it cannot be reached, the API server refuses to create pods it selects ("failed calling webhook
  ... sidecar-injector.istio.io"), and a restarted Deployment loses its pods instead of renewing them.
  A bypass (``sidecar.istio.io/inject: "false"``) is decided by the webhook too, so it needs it as well.
- **New pods need the revision their namespace asks for.**  A namespace labelled ``istio.io/rev=X`` is only
  injected by a webhook that serves revision X (the webhook's namespaceSelector, same template): with none,
  new pods start without a sidecar and drop out of the mesh (STRICT peers refuse them).
- **Every change needs the API server.**
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from commands.findings import Finding, Remediation


class Dependency(StrEnum):
    """A part of the control plane a remediation can depend on, in the order they must be healthy."""

    API_SERVER = "api-server"
    ISTIOD = "istiod"
    CA = "ca"
    INJECTION = "injection-webhook"
    REVISION = "revision"

    @property
    def rank(self) -> int:
        return list(Dependency).index(self)


class Effect(StrEnum):
    """What a remediation does to the mesh, which decides what it depends on."""

    READ_ONLY = "read-only"
    CONFIG = "config"
    """New or changed mesh configuration: only istiod can push it to proxies."""
    NEW_PODS = "new-pods"
    """Pods with sidecars are deleted or rolled and re-created."""
    BYPASS = "bypass"
    """Pods are re-created without a sidecar."""
    CONTROL_PLANE = "control-plane"
    """istiod itself is changed (its resources, a restart)."""


NEEDS: dict[Effect, tuple[Dependency, ...]] = {
    Effect.READ_ONLY: (),
    Effect.CONFIG: (Dependency.API_SERVER, Dependency.ISTIOD),
    Effect.NEW_PODS: (Dependency.API_SERVER, Dependency.ISTIOD, Dependency.CA, Dependency.INJECTION,
                      Dependency.REVISION),
    Effect.BYPASS: (Dependency.API_SERVER, Dependency.INJECTION),
    Effect.CONTROL_PLANE: (Dependency.API_SERVER,),
}

WHY_BLOCKED: dict[Dependency, str] = {
    Dependency.API_SERVER: "the Kubernetes API server cannot be reached, so no change can be made",
    Dependency.ISTIOD: "istiod is not serving, so no proxy can receive this change (proxies keep their last "
                       "config until it is back)",
    Dependency.CA: "the mesh CA cannot issue usable certificates, so a new pod gets no workload certificate "
                   "and never becomes Ready",
    Dependency.INJECTION: "the sidecar-injector webhook cannot be reached and fails closed, so the API server "
                          "refuses to create the new pods",
    Dependency.REVISION: "no webhook serves the namespace's Istio revision, so new pods start without a sidecar "
                         "and drop out of the mesh",
}

# -- which findings mean a dependency is failing ----------------------------------------------------------

# Codes from commands/codes.py.  istiod's pod not Ready, OOMKilled, crash-looping or missing, or its debug
# endpoint unreachable: it neither pushes config nor signs certificates (istiod is both:
# https://istio.io/latest/docs/ops/deployment/architecture/#istiod).
ISTIOD_DOWN = frozenset({"MB1001", "MB1002", "MB1003", "MB1006", "MB2005"})
CA_FAILING = frozenset({"MB3020", "MB6023"})
"""istiod answers CSRs with errors (citadel_server_csr_sign_err_count, security/pkg/server/ca/monitoring.go): from
its /metrics since it started (MB3020) or from Prometheus over the last window (MB6023)."""
ROOT_EXPIRED = frozenset({"MB3001"})
INJECTION_DOWN = frozenset({"MB1040", "MB1042"})
REVISION_UNSERVED = frozenset({"MB1041"})
API_UNREACHABLE = frozenset({"MB0002"})


@dataclass(frozen=True)
class Blocker:
    """A failing dependency, the finding that shows it, and where it applies (None: everywhere)."""

    dependency: Dependency
    finding: Finding
    namespace: str | None = None

    @property
    def reason(self) -> str:
        return WHY_BLOCKED[self.dependency]


def _is_istiod_finding(finding: Finding) -> bool:
    if finding.code in {"MB1006", "MB2005"}:
        return True
    role = finding.evidence.get("role")
    if role is not None:
        return role == "istiod"
    return finding.message.startswith("istiod ")


def _is_mesh_root(finding: Finding) -> bool:
    role = finding.evidence.get("role")
    return role in ("mesh-root", "mesh_root") if role is not None else finding.message.startswith("Mesh root")


def _namespace_of(finding: Finding) -> str | None:
    scoped = finding.evidence.get("namespace")
    if isinstance(scoped, str) and scoped:
        return scoped
    kind, _, rest = finding.origin.partition(" ")
    if kind == "Namespace":
        return rest or None
    return rest.split("/", 1)[0] if "/" in rest else None


def blockers_of(finding: Finding) -> tuple[Blocker, ...]:
    """The dependencies ``finding`` shows failing (none for most findings)."""
    code = finding.code
    if code in ISTIOD_DOWN and _is_istiod_finding(finding):
        # istiod down is a CA down too, unless the CA is external; then MB3020 tells the CA apart.
        return (Blocker(Dependency.ISTIOD, finding), Blocker(Dependency.CA, finding))
    if code in CA_FAILING or (code in ROOT_EXPIRED and _is_mesh_root(finding)):
        return (Blocker(Dependency.CA, finding),)
    if code in INJECTION_DOWN:
        affected = finding.evidence.get("namespaces")
        if isinstance(affected, (list, tuple)) and affected:
            return tuple(Blocker(Dependency.INJECTION, finding, str(ns)) for ns in affected)
        return (Blocker(Dependency.INJECTION, finding, _namespace_of(finding) if code == "MB1042" else None),)
    if code in REVISION_UNSERVED:
        return (Blocker(Dependency.REVISION, finding, _namespace_of(finding)),)
    if code in API_UNREACHABLE and str(finding.evidence.get("status", "")) in ("", "None"):
        return (Blocker(Dependency.API_SERVER, finding),)
    return ()


# -- what a step does -------------------------------------------------------------------------------------

_KUBECTL_NS = r"(?:\s+(?:-n|--namespace)(?:=|\s+)\S+)?"
_ISTIOD_TARGET = re.compile(r"\b(deployment/|deployments?\s+)istiod[\w-]*\b")
_DELETES_PODS = re.compile(rf"\bkubectl{_KUBECTL_NS}\s+delete{_KUBECTL_NS}\s+(pods?\b|po\b|pod/)")
_ROLLS_PODS = re.compile(rf"\bkubectl{_KUBECTL_NS}\s+(rollout\s+restart|scale|set\s+(resources|image|env))\b")
_CHANGES_CONFIG = re.compile(rf"\b(kubectl{_KUBECTL_NS}\s+(apply|patch|edit|create|replace|delete)|istioctl\s+"
                             rf"(install|upgrade|x\s+revision\s+tag))\b")
_MESH_KINDS = re.compile(r"\b(virtualservices?|destinationrules?|peerauthentications?|authorizationpolic(y|ies)|"
                         r"envoyfilters?|sidecars?|gateways?|serviceentr(y|ies)|telemetr(y|ies)|vs|dr|pa|ap)\b")


def effect_of(step: Remediation) -> Effect:
    """What ``step`` does: from its meshbot action when it has one, else from its shell command."""
    if step.action:
        verb, _, rest = step.action.strip().partition(" ")
        if verb == "permissive-mtls":
            return Effect.CONFIG
        if verb == "bypass":
            return Effect.BYPASS
        if verb in ("restart", "memory"):
            # Both roll the Deployment's pods (a new memory limit is a new pod template): istiod's own are the
            # control plane, anyone else's are new pods with sidecars.
            return Effect.CONTROL_PLANE if rest.split()[:1] == ["istiod"] else Effect.NEW_PODS
    command = step.command or ""
    if not command:
        return Effect.READ_ONLY
    if _ISTIOD_TARGET.search(command) and (_ROLLS_PODS.search(command) or _CHANGES_CONFIG.search(command)):
        return Effect.CONTROL_PLANE
    if _DELETES_PODS.search(command) or _ROLLS_PODS.search(command):
        return Effect.NEW_PODS
    if _CHANGES_CONFIG.search(command) and (_MESH_KINDS.search(command) or "-f " in command or "istioctl" in command):
        return Effect.CONFIG
    return Effect.READ_ONLY


def namespace_of_step(step: Remediation) -> str | None:
    """The namespace a step acts in, when it says (``-n NS``, ``permissive-mtls NS``, ``bypass X -n NS``)."""
    text = step.action or step.command or ""
    match = re.search(r"(?:-n|--namespace)(?:=|\s+)([a-z0-9-]+)", text)
    if match:
        return match.group(1)
    parts = (step.action or "").split()
    if len(parts) >= 2 and parts[0] == "permissive-mtls" and not parts[1].startswith("-"):
        return parts[1]
    if len(parts) >= 3 and parts[0] in ("bypass", "restart"):
        return parts[-1] if not parts[-1].startswith("-") else None
    return None


# -- the mesh's health as far as steps are concerned --------------------------------------------------------

@dataclass(frozen=True)
class MeshHealth:
    """The failing dependencies a diagnosis found."""

    failing: tuple[Blocker, ...] = ()

    @classmethod
    def from_findings(cls, findings: Iterable[Finding]) -> MeshHealth:
        found = [b for f in findings for b in blockers_of(f)]
        # Stable: blockers of one dependency keep the findings' (the registry's report) order, except that a
        # finding carrying a fix comes first: "istiod was OOMKilled: raise its memory" is the step to offer,
        # "istiod is not ready" only the symptom.
        return cls(tuple(sorted(found, key=lambda b: (b.dependency.rank, b.finding.remediation is None))))

    def blockers(self, step: Remediation, namespace: str | None = None) -> tuple[Blocker, ...]:
        """What stops ``step`` from working now, most fundamental first; empty when nothing does."""
        needs = NEEDS[effect_of(step)]
        where = namespace_of_step(step) or namespace
        return tuple(b for b in self.failing
                     if b.dependency in needs and (b.namespace is None or where is None or b.namespace == where))

    def dependency_failing(self, dependency: Dependency) -> bool:
        return any(b.dependency == dependency for b in self.failing)


def gate(step: Remediation, health: MeshHealth, namespace: str | None = None, *,
         blocker_of: Finding | None = None) -> Remediation:
    """``step`` when it can work now; otherwise the fix of what blocks it first, and ``step`` after it.

    The blocked step's command is dropped, never printed as something to run: a pod deleted while the CA
    fails is what turns an ageing certificate into an outage.  ``blocker_of`` is the finding ``step`` belongs
    to: a finding never waits for itself (istiod's own fix does not wait for istiod).
    """
    blocking = [b for b in health.blockers(step, namespace) if b.finding != blocker_of]
    if not blocking:
        return step
    first = blocking[0]
    fix = first.finding.remediation
    first_fix = gate(fix, health, namespace, blocker_of=first.finding) if fix else None
    what = first.finding.message.rstrip(".")
    summary = f"Not yet: {first.reason}. First: {_lower_first(first_fix.summary) if first_fix else what}"
    if first_fix:
        summary += f" ({what})"
    summary += f". Then: {_lower_first(step.summary)}"
    # The blocker's command is its fix; a meshbot action beside it (istiod's "restart", kept for playbooks) is
    # offered only when there is no command, since a restart alone is rarely what unblocks anything.
    command = first_fix.command if first_fix else None
    return Remediation(summary=summary, command=command,
                       action=first_fix.action if first_fix and not command else None)


def gate_findings(findings: Sequence[Finding]) -> list[Finding]:
    """Every finding's remediation gated against what the same diagnosis found failing."""
    health = MeshHealth.from_findings(findings)
    if not health.failing:
        return list(findings)
    out = []
    for finding in findings:
        step = finding.remediation
        gated = gate(step, health, _namespace_of(finding), blocker_of=finding) if step else None
        if gated is step:
            out.append(finding)
            continue
        blocked_by = sorted({b.dependency.value for b in health.blockers(step, _namespace_of(finding))
                             if b.finding != finding}) if step else []
        out.append(replace(finding, remediation=gated,
                           evidence={**finding.evidence, "blocked_by": blocked_by}))
    return out


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
