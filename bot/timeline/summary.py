"""What an incident keeps of its timeline: the onset, the worst failing edges and the last change before the
onset, stored with the diagnosis (``DiagnosisRecord.timeline``) so the top message renders it after a restart.
Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from commands.telemetry.edges import FailingEdge
from commands.telemetry.timeline import Timeline
from commands.times import human_duration, parse_rfc3339, rfc3339

EDGES_KEPT = 3
"""Edges named in the top message: the worst few say who is failing whom; the thread lists the rest."""


@dataclass(frozen=True)
class EdgeLine:
    edge: str
    """``frontend.shop -> payments.shop`` (workload.namespace, as ``commands.telemetry.edges.Edge`` prints)."""
    code: str
    """The commonest failure: ``403``, ``503 UF``, ``tcp``."""
    share: float
    since: datetime | None

    def text(self) -> str:
        share = f"{round(100 * self.share)}%" if self.code != "tcp" else "TCP"
        return f"{self.edge} {self.code} ({share})"


@dataclass(frozen=True)
class TimelineSummary:
    at: datetime
    """The alert's time the window was centred on."""
    onset: datetime | None = None
    first_edge: str | None = None
    edges: tuple[EdgeLine, ...] = ()
    last_change: str | None = None
    """``VirtualService prod/payment-routes applied by argocd-controller, 2 minutes before the onset``."""
    warnings: int = 0
    """Warning Events in scope."""

    @classmethod
    def of(cls, timeline: Timeline) -> TimelineSummary:
        onset = timeline.onset
        edges = [*timeline.telemetry.edges, *timeline.telemetry.tcp_edges]
        first = next((e for e in edges if e.onset and e.onset.at == onset), None) if onset else None
        change = timeline.last_change_before_onset()
        last = None
        if change is not None and onset is not None:
            by = f" by {change.manager}" if change.manager else ""
            last = f"{change.object} {change.what}{by}, {human_duration(onset - change.at)} before the onset"
        return cls(at=timeline.at, onset=onset, first_edge=str(first.edge) if first else None,
                   edges=tuple(_line(e) for e in edges[:EDGES_KEPT]), last_change=last,
                   warnings=sum(1 for e in timeline.events if e.type == "Warning"))

    @property
    def empty(self) -> bool:
        return self.onset is None and not self.edges and not self.warnings

    def to_data(self) -> dict[str, Any]:
        return {"at": rfc3339(self.at), "onset": rfc3339(self.onset) if self.onset else None,
                "first_edge": self.first_edge, "last_change": self.last_change, "warnings": self.warnings,
                "edges": [{"edge": e.edge, "code": e.code, "share": round(e.share, 4),
                           "since": rfc3339(e.since) if e.since else None} for e in self.edges]}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> TimelineSummary:
        return cls(at=parse_rfc3339(str(data["at"])), onset=_time(data.get("onset")),
                   first_edge=data.get("first_edge"), last_change=data.get("last_change"),
                   warnings=int(data.get("warnings") or 0),
                   edges=tuple(EdgeLine(str(e["edge"]), str(e["code"]), float(e["share"]), _time(e.get("since")))
                               for e in _edges(data)))


def _edges(data: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return data.get("edges") or ()


def _time(value: Any) -> datetime | None:
    return parse_rfc3339(str(value)) if value else None


def _line(edge: FailingEdge) -> EdgeLine:
    code = max(edge.codes.items(), key=lambda item: item[1])[0] if edge.codes else "errors"
    flags = [f for f in sorted(edge.flags, key=lambda f: -edge.flags[f]) if f != "-"][:1]
    return EdgeLine(str(edge.edge), " ".join([code, *flags]), round(edge.share, 4),
                    edge.onset.at if edge.onset and edge.onset.at else None)
