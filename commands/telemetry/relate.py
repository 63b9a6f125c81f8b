"""Time next to causes: which change came shortly before the errors began on the failing edges (pure).

``relate`` takes triage's causes, the failing edges with their onsets and the change timeline, and says for
each cause which changes it can be tied to, by one stated rule:

  a change counts for a cause when it happened within ``window`` (15 minutes) before an edge's onset (or
  up to ``slack`` after it: an onset is only as precise as the query step and rate() window), and it is on
  that edge: to the cause's own object, or in the edge's source or destination namespace, or mesh-wide
  config in the Istio root namespace (it applies to every workload: istio.io/latest/docs/reference/config/
  security/peer_authentication/ and authorization-policy/), or, for a cause in the Istio namespace
  (istiod, the mesh CA), any change there (a restart, a root rotation).

The score (0-1) is higher for the cause's own object (1.0 against 0.5 for a neighbour in the namespace)
and for a change closer to the onset; a cause with no such change scores 0, so healthy traffic (no onset)
and changes long before the onset never pull a cause up.  ``rank_by_time`` hands the scores to triage, which
breaks ties of equal impact with them (``commands.triage.ORDERING``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from commands.explanations import namespace_of
from commands.telemetry.changes import Change
from commands.telemetry.edges import FailingEdge
from commands.times import human_duration
from commands.triage import Cause, Triage, with_timing

WINDOW = timedelta(minutes=15)
SLACK = timedelta(minutes=1)
OWN_OBJECT, NEIGHBOUR = 1.0, 0.5


@dataclass(frozen=True)
class TimedChange:
    change: Change
    edge: FailingEdge
    lead: timedelta
    """How long before the edge's onset the change happened (negative: within the slack after it)."""
    score: float
    sentence: str
    """``AuthorizationPolicy shop/deny-all applied by argocd 2 minutes before 403s began from frontend to
    payments``."""


@dataclass(frozen=True)
class CauseTiming:
    cause_key: str
    changes: tuple[TimedChange, ...]
    """Best first."""
    rule: str

    @property
    def score(self) -> float:
        return self.changes[0].score if self.changes else 0.0

    @property
    def because(self) -> str | None:
        return self.changes[0].sentence if self.changes else None

    def to_dict(self) -> dict:
        return {"cause": self.cause_key, "score": round(self.score, 3), "because": self.because,
                "rule": self.rule, "changes": [{**t.change.to_dict(), "edge": str(t.edge.edge),
                                                "lead_seconds": round(t.lead.total_seconds()),
                                                "score": round(t.score, 3)} for t in self.changes]}


def rule_text(window: timedelta = WINDOW, slack: timedelta = SLACK) -> str:
    return (f"a change to the cause's object, or in a failing edge's namespace, from {human_duration(window)} "
            f"before that edge's onset to {human_duration(slack)} after it")


def relate(triage: Triage, edges: Sequence[FailingEdge], changes: Sequence[Change], *,
           istio_namespace: str = "istio-system", window: timedelta = WINDOW,
           slack: timedelta = SLACK) -> list[CauseTiming]:
    """One ``CauseTiming`` per cause of ``triage``, in triage's order; a cause no change explains scores 0."""
    rule = rule_text(window, slack)
    started = [e for e in edges if e.onset and e.onset.at]
    timings = []
    for cause in triage.causes:
        timed = [t for edge in _edges_of(cause, started, istio_namespace)
                 for t in _timed(cause, edge, changes, istio_namespace, window, slack)]
        timings.append(CauseTiming(cause.key, tuple(sorted(timed, key=lambda t: (-t.score, t.lead))), rule))
    return timings


def _namespaces_of(cause: Cause) -> set[str]:
    return {ns for f in (cause.finding, *cause.explains) if (ns := namespace_of(f))}


def _edges_of(cause: Cause, edges: Iterable[FailingEdge], istio_namespace: str) -> list[FailingEdge]:
    namespaces = _namespaces_of(cause)
    if istio_namespace in namespaces:
        return list(edges)  # istiod, the mesh CA or root-namespace config reach every edge
    return [e for e in edges if e.edge.namespaces & namespaces]


def _timed(cause: Cause, edge: FailingEdge, changes: Iterable[Change], istio_namespace: str,
           window: timedelta, slack: timedelta) -> list[TimedChange]:
    onset = edge.onset.at if edge.onset else None
    if onset is None:
        return []
    near = edge.edge.namespaces | ({istio_namespace} if istio_namespace in _namespaces_of(cause) else set())
    found = []
    for change in changes:
        lead = onset - change.at
        if not -slack <= lead <= window:
            continue
        if change.object == cause.finding.origin:
            weight = OWN_OBJECT
        elif change.namespace in near or change.namespace == istio_namespace and change.kind == "config":
            weight = NEIGHBOUR
        else:
            continue
        closeness = 1 - max(lead, timedelta(0)) / window
        found.append(TimedChange(change, edge, lead, weight * (0.5 + 0.5 * closeness), _sentence(change, edge, lead)))
    return found


def _sentence(change: Change, edge: FailingEdge, lead: timedelta) -> str:
    by = f" by {change.manager}" if change.manager else ""
    when = f"{human_duration(lead)} before" if lead >= timedelta(minutes=1) else (
        "less than a minute before" if lead >= timedelta(0) else "as")
    top = max(edge.codes.items(), key=lambda item: item[1])[0] if edge.codes else "errors"
    failures = "TCP failures" if top == "tcp" else f"{top}s"
    return (f"{change.object} {change.what}{by} {when} {failures} began from {edge.edge.source.name} to "
            f"{edge.edge.destination.name}")


def rank_by_time(result: Triage, edges: Sequence[FailingEdge], changes: Sequence[Change], *,
                 istio_namespace: str = "istio-system") -> tuple[Triage, list[CauseTiming]]:
    """``result`` re-ordered with time as the tie-breaker within equal impact (``commands.triage.with_timing``),
    and the timing of each cause it used."""
    timings = relate(result, edges, changes, istio_namespace=istio_namespace)
    return with_timing(result, {t.cause_key: (t.score, t.because) for t in timings}), timings
