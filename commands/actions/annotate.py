"""What a plan carries beside its changes, in ``Plan.extra`` (so it is bound into the hash approvers approve):
the effect class and scope its preconditions and verification use, the preconditions as checked at plan time,
the card's review (blast radius, policies a bypass switches off, restart judgement, undo and risk), and for a
rollback what breaks if the original cause is still there."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from commands.actions.dependencies import Precondition, effect_of_target, rollback_needs
from commands.actions.plan import Plan
from commands.actions.review import UNDO, CallerReader, Review, review
from commands.actions.targets import ActionTarget, ActionUsageError, Scope, parse_action
from commands.clients.kube import KubeClient
from commands.errors import MeshbotError
from commands.findings import Finding
from commands.preconditions import NEEDS, Dependency

RiskReader = Callable[[Sequence[Dependency], str | None], tuple[tuple[Precondition, ...], list[Finding]]]
"""(dependencies, namespace) -> each checked now, and the findings (``MeshInspector.preconditions``)."""


def needs_and_scope(target: ActionTarget) -> tuple[tuple[Dependency, ...], str | None]:
    """The dependencies of the action's effect, and the namespace they are judged in (None: the mesh)."""
    return NEEDS[effect_of_target(target)], None if target.scope == Scope.MESH else target.namespace


def _deployment_name(plan: Plan) -> str | None:
    return next((c.name for c in plan.changes if c.kind == "Deployment"), None)


def annotate_plan(plan: Plan, target: ActionTarget, client: KubeClient, checked: Sequence[Precondition],
                  findings: Sequence[Finding], callers: CallerReader | None = None) -> Plan:
    """``callers``: who calls the acted-on workloads, for the blast radius (None: the card says they are not
    known without Prometheus)."""
    needs, scope = needs_and_scope(target)
    name = target.name or (_deployment_name(plan) if target.scope == Scope.ISTIOD else None)
    try:
        card = review(client, target, name, findings, callers)
    except MeshbotError as exc:  # the card says what it could not read; the plan itself stands
        card = Review(blast_radius=(f"not known: {exc}",))
    extra: dict[str, Any] = {**plan.extra, "effect": str(effect_of_target(target)), "scope": scope,
                             "needs": [str(d) for d in needs], "preconditions": [p.to_dict() for p in checked],
                             "review": card.to_dict()}
    return replace(plan, extra=extra)


def annotate_rollback(plan: Plan, original: Plan, risk: RiskReader | None) -> Plan:
    """A rollback needs what the change needed; its card says what breaks if the original cause is still there."""
    try:
        target = parse_action(original.action.split())
    except ActionUsageError:
        return plan
    needs, scope = needs_and_scope(target)
    checked = risk(rollback_needs(target), scope)[0] if risk else ()
    extra: dict[str, Any] = {"effect": str(effect_of_target(target)), "scope": scope, "needs": [str(d) for d in needs],
                             "rollback_risk": [p.to_dict() for p in checked],
                             "review": Review(undo="This rollback is itself not undone by meshbot; ask for the "
                                                   "action again if needed.",
                                              undo_risk=UNDO[target.action][1]).to_dict()}
    return replace(plan, extra=extra)
