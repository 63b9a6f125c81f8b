"""An action's preconditions: what its effect depends on, and whether a fresh diagnosis shows each met.  Pure.

``commands.preconditions`` says which parts of the control plane each kind of step depends on, with the
sources (xDS for config, the CA for new pods, the injection webhook and revision for pods and bypass, the API
server for everything).  Here an approval request's target gets the same treatment twice, at plan time and
right before execution: each dependency is *met*, *failing* (with the finding that shows it and that finding's
own fix, which goes first) or *not checked* (with why: the check that would tell could not run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from commands.actions.targets import ActionName, ActionTarget, Scope
from commands.findings import Finding
from commands.preconditions import NEEDS, WHY_BLOCKED, Dependency, Effect, MeshHealth

CONTROL_PLANE_CHECKS = ("status", "proxy-status")
"""istiod's pods (status) and whether it answers and pushes (proxy-status's /debug/syncz)."""
CERTIFICATE_CHECK = "certs"
"""The mesh root and the CA's signing errors: only actions that create pods need them."""


def effect_of_target(target: ActionTarget) -> Effect:
    """What the action does to the mesh (the classes of ``commands.preconditions.Effect``)."""
    if target.action == ActionName.PERMISSIVE_MTLS:
        return Effect.CONFIG
    if target.action == ActionName.BYPASS:
        return Effect.BYPASS
    if target.scope == Scope.ISTIOD:
        return Effect.CONTROL_PLANE  # restart or memory of istiod: only the API server is needed
    return Effect.NEW_PODS


def checks_for(effect: Effect) -> tuple[str, ...]:
    """The checks that tell whether ``effect``'s dependencies hold."""
    return checks_for_needs(NEEDS[effect])


def checks_for_needs(needs: Sequence[Dependency]) -> tuple[str, ...]:
    if not needs or needs == (Dependency.API_SERVER,):
        return ("status",)  # reading the istio namespace is itself the API-server check
    return CONTROL_PLANE_CHECKS + ((CERTIFICATE_CHECK,) if Dependency.CA in needs else ())


COVERED_BY: dict[Dependency, tuple[str, ...]] = {
    Dependency.API_SERVER: ("status",),
    Dependency.ISTIOD: CONTROL_PLANE_CHECKS,
    Dependency.CA: (CERTIFICATE_CHECK,),
    Dependency.INJECTION: ("status",),
    Dependency.REVISION: ("status",),
}
"""Which checks must have run for a dependency to count as checked (codes in ``commands.preconditions``)."""


class State(StrEnum):
    MET = "met"
    FAILING = "failing"
    NOT_CHECKED = "not checked"


STATE_ICON = {State.MET: "\u2705", State.FAILING: "\u274c", State.NOT_CHECKED: "\u2753"}


@dataclass(frozen=True)
class Precondition:
    dependency: Dependency
    state: State
    detail: str = ""
    """Failing: the finding that shows it; not checked: why not."""
    code: str | None = None
    fix: str | None = None
    """Failing: the finding's own fix (its summary), which must go first."""
    fix_action: str | None = None
    """Failing: the meshbot action that fixes it, when there is one (``memory istiod -n istio-system ...``)."""
    fix_command: str | None = None

    @property
    def line(self) -> str:
        what = DESCRIBE[self.dependency]
        if self.state == State.MET:
            return f"{STATE_ICON[self.state]} {what}: met"
        return f"{STATE_ICON[self.state]} {what}: {self.state} \u2014 {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {"dependency": str(self.dependency), "state": str(self.state), "detail": self.detail,
                "code": self.code, "fix": self.fix, "fix_action": self.fix_action, "fix_command": self.fix_command}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Precondition:
        return cls(Dependency(data["dependency"]), State(data["state"]), data.get("detail") or "", data.get("code"),
                   data.get("fix"), data.get("fix_action"), data.get("fix_command"))


DESCRIBE = {
    Dependency.API_SERVER: "Kubernetes API server reachable",
    Dependency.ISTIOD: "istiod Ready and pushing config",
    Dependency.CA: "mesh CA issuing usable certificates",
    Dependency.INJECTION: "sidecar-injector webhook reachable",
    Dependency.REVISION: "the namespace's Istio revision served",
}


@dataclass(frozen=True)
class Diagnosis:
    """What the fresh diagnosis behind the preconditions gave: findings per namespace, the checks that ran, or
    why it could not run."""

    findings: tuple[Finding, ...] = ()
    checks: tuple[str, ...] = ()
    error: str | None = None


def evaluate(effect: Effect, namespace: str | None, diagnosis: Diagnosis) -> tuple[Precondition, ...]:
    """Each dependency of ``effect`` in ``namespace`` (None: everywhere), met / failing / not checked."""
    return evaluate_needs(NEEDS[effect], namespace, diagnosis)


def evaluate_needs(needs: Sequence[Dependency], namespace: str | None,
                   diagnosis: Diagnosis) -> tuple[Precondition, ...]:
    health = MeshHealth.from_findings(diagnosis.findings)
    out: list[Precondition] = []
    for dependency in needs:
        failing = [b for b in health.failing if b.dependency == dependency
                   and (b.namespace is None or namespace is None or b.namespace == namespace)]
        if failing:
            blocker = failing[0]
            fix = blocker.finding.remediation
            out.append(Precondition(dependency, State.FAILING, blocker.finding.message, blocker.finding.code,
                                    fix.summary if fix else None, fix.action if fix else None,
                                    fix.command if fix else None))
        elif diagnosis.error is not None:
            out.append(Precondition(dependency, State.NOT_CHECKED, f"the diagnosis could not run: {diagnosis.error}"))
        elif dependency == Dependency.API_SERVER:
            out.append(Precondition(dependency, State.MET))  # the diagnosis just read the cluster through it
        else:
            missing = [c for c in COVERED_BY[dependency] if c not in diagnosis.checks]
            out.append(Precondition(dependency, State.NOT_CHECKED, f"`{', '.join(missing)}` did not run")
                       if missing else Precondition(dependency, State.MET))
    return tuple(out)


def unmet(preconditions: Sequence[Precondition]) -> tuple[Precondition, ...]:
    return tuple(p for p in preconditions if p.state == State.FAILING)


def fix_first_text(blocker: Precondition) -> str:
    """"istiod is not Ready: raise its memory first; this change cannot reach any proxy until then"."""
    fix = blocker.fix or "fix it first"
    how = f" (`/mesh {blocker.fix_action}`)" if blocker.fix_action else \
        (f" (`{blocker.fix_command}`)" if blocker.fix_command else "")
    return (f"{blocker.detail.rstrip('.')}: {fix[:1].lower() + fix[1:] if fix[:2] != fix[:2].upper() else fix}"
            f"{how} first; {WHY_BLOCKED[blocker.dependency]}.")


ROLLBACK_NEEDS: dict[ActionName, tuple[Dependency, ...]] = {
    # Restoring STRICT mTLS needs certificates peers accept: with the root still expired or the CA down, the
    # calls the permissive policy rescued fail again (istio.io/latest/docs/ops/configuration/security/
    # root-transition/).
    ActionName.PERMISSIVE_MTLS: (Dependency.API_SERVER, Dependency.ISTIOD, Dependency.CA),
    # Re-injected pods need the webhook, the revision, istiod and its CA (commands.preconditions, NEW_PODS).
    ActionName.BYPASS: NEEDS[Effect.NEW_PODS],
}
"""What must be healthy for a rollback not to bring the outage back: the original cause's dependencies."""


def rollback_needs(target: ActionTarget) -> tuple[Dependency, ...]:
    """A memory rollback rolls pods like the change did; the others need what ``ROLLBACK_NEEDS`` says."""
    return ROLLBACK_NEEDS.get(target.action) or NEEDS[effect_of_target(target)]


def preconditions_from(data: Sequence[Mapping[str, Any]] | None) -> tuple[Precondition, ...]:
    return tuple(Precondition.from_dict(d) for d in data or ())
