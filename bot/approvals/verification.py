"""Preconditions and verification by effect around one execution, for the approval desk.

Before the first write: the action's preconditions again, from a fresh diagnosis (an unmet one stops the run,
nothing is written), and a baseline observation.  After the writes: the observation again, polled for a short
settle time until the effect shows, judged by ``commands.actions.effect.judge``; and a follow-up due a few
minutes later, which the desk's sweep runs (``follow_up``).  What is stored is plain JSON in the request's
``verification``: the object check, the effect report, the baseline and when the follow-up is due.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.approvals.inspection import MeshInspector
from commands.actions import Plan
from commands.actions.dependencies import fix_first_text, unmet
from commands.actions.effect import FOLLOW_UP, EffectReport, Observation, Outcome, judge
from commands.preconditions import Dependency, Effect
from commands.times import parse_rfc3339, rfc3339

SETTLE = timedelta(seconds=10)
"""How long the first look waits for the push to be acknowledged: istiod debounces config for 100 ms to 10 s
(PILOT_DEBOUNCE_AFTER / PILOT_DEBOUNCE_MAX, pilot/pkg/features/tuning.go) before it pushes."""
SETTLE_POLL = 1.0
WAIT_FOR_PUSH = (Effect.CONFIG, Effect.CONTROL_PLANE)
"""Effects whose first sign is istiod pushing (a config change acked, istiod answering again)."""


def effect_of_plan(plan: Plan) -> Effect | None:
    value = plan.extra.get("effect")
    return Effect(value) if value else None


def needs_of_plan(plan: Plan) -> tuple[Dependency, ...] | None:
    """What the plan's run depends on (set when it was planned; None for plans from before preconditions)."""
    needs = plan.extra.get("needs")
    return None if needs is None else tuple(Dependency(d) for d in needs)


def scope_of_plan(plan: Plan) -> str | None:
    scope = plan.extra.get("scope")
    return str(scope) if scope else None


@dataclass
class ExecutionChecks:
    inspector: MeshInspector | None
    settle: timedelta = SETTLE
    follow_up_after: timedelta = FOLLOW_UP
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when the bot stops: the settle wait ends at once."""

    def blocked(self, plan: Plan) -> tuple[str | None, list[dict[str, Any]]]:
        """The run-stopping message when a precondition fails now (None: go ahead), and the preconditions."""
        needs = needs_of_plan(plan)
        if self.inspector is None or needs is None:
            return None, []
        # Read fresh: the shared view may still hold the istiod pods it read when the plan was approved.
        checked, _ = self.inspector.preconditions(needs, scope_of_plan(plan), fresh=True)
        failing = unmet(checked)
        message = ("Stopped before any write: " + fix_first_text(failing[0])) if failing else None
        return message, [p.to_dict() for p in checked]

    def baseline(self, plan: Plan) -> Observation | None:
        if self.inspector is None or effect_of_plan(plan) is None:
            return None
        return self.inspector.observe(self._observed_scope(plan))

    def after(self, plan: Plan, baseline: Observation | None, now: datetime) -> dict[str, Any]:
        """The first look, polled until the effect shows or ``settle`` passes; and when the follow-up is due."""
        effect = effect_of_plan(plan)
        if self.inspector is None or baseline is None or effect is None:
            return {}
        if effect in WAIT_FOR_PUSH:
            # Only istiod is asked while waiting (Envoy's counters need port-forwards and minutes to move).
            waited = timedelta(0)
            while (self._look(effect, plan, baseline, traffic=False).outcome != Outcome.SEEN
                   and waited < self.settle and not self.stop.wait(SETTLE_POLL)):
                waited += timedelta(seconds=SETTLE_POLL)
        report = self._look(effect, plan, baseline)
        return {"effect": report.to_dict(), "baseline": baseline.to_dict(),
                "follow_up_at": rfc3339(now + self.follow_up_after)}

    def follow_up(self, plan: Plan, verification: Mapping[str, Any]) -> EffectReport | None:
        effect = effect_of_plan(plan)
        if self.inspector is None or effect is None or not verification.get("baseline"):
            return None
        return self._look(effect, plan, Observation.from_dict(verification["baseline"]))

    def _look(self, effect: Effect, plan: Plan, baseline: Observation, *, traffic: bool = True) -> EffectReport:
        assert self.inspector is not None
        return judge(effect, baseline, self.inspector.observe(self._observed_scope(plan), traffic=traffic,
                                                              baseline=baseline))

    @staticmethod
    def _observed_scope(plan: Plan) -> str | None:
        # istiod serves the whole mesh: after a control-plane change every proxy is in scope.
        return None if effect_of_plan(plan) == Effect.CONTROL_PLANE else scope_of_plan(plan)


def follow_up_due(verification: Mapping[str, Any] | None, now: datetime) -> bool:
    if not verification or verification.get("follow_up") is not None or not verification.get("follow_up_at"):
        return False
    return parse_rfc3339(str(verification["follow_up_at"])) <= now


def verified_by_effect(verification: Mapping[str, Any] | None) -> bool:
    """The latest look (the follow-up once it ran) saw the effect."""
    if not verification:
        return False
    latest = verification.get("follow_up") or verification.get("effect") or {}
    return latest.get("outcome") == str(Outcome.SEEN)

