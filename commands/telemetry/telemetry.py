"""The Prometheus part of a diagnosis: failing edges with onsets, TCP failures and istiod's trends.

Optional and bounded: without a Prometheus, or when it is slow, down, answers too many series or has
no Istio metrics, the answer is an Info finding saying what was not seen, never an exception and never a
wait beyond one timeout (after a timeout or a refused connection no further question is asked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from commands import codes
from commands.clients.prometheus import PrometheusApi, TooManySeries
from commands.errors import ClusterError, MeshbotError, TransientError
from commands.findings import Finding
from commands.telemetry.edges import FailingEdge, failing_edges, failing_tcp_edges, has_istio_metrics
from commands.telemetry.istiod import IstiodTrends, read_trends, trend_findings
from commands.times import rfc3339, short_duration

T = TypeVar("T")

DEFAULT_LOOKBACK = timedelta(minutes=30)
AFTER_ALERT = timedelta(minutes=5)
"""The window reaches a little past the alert: failures keep growing while the alert waits in its ``for``."""
EDGES_AND_ONSETS = "failing edges and onsets"


@dataclass(frozen=True)
class Telemetry:
    start: datetime
    end: datetime
    edges: tuple[FailingEdge, ...] = ()
    tcp_edges: tuple[FailingEdge, ...] = ()
    istiod: IstiodTrends = field(default_factory=IstiodTrends)
    findings: tuple[Finding, ...] = ()
    """Failing edges and istiod trends as findings, and Info findings for what could not be seen."""

    @property
    def onset(self) -> datetime | None:
        """The earliest onset among the failing edges."""
        moments = [e.onset.at for e in self.edges if e.onset and e.onset.at]
        return min(moments) if moments else None

    def to_dict(self) -> dict:
        return {"start": rfc3339(self.start), "end": rfc3339(self.end),
                "onset": rfc3339(self.onset) if self.onset else None,
                "edges": [e.to_dict() for e in self.edges], "tcp_edges": [e.to_dict() for e in self.tcp_edges],
                "istiod": self.istiod.to_dict(), "findings": [f.to_dict() for f in self.findings]}


def window_around(at: datetime, lookback: timedelta = DEFAULT_LOOKBACK) -> tuple[datetime, datetime]:
    return at - lookback, at + AFTER_ALERT


def read_telemetry(prometheus: PrometheusApi | None, *, namespaces: Sequence[str], start: datetime,
                   end: datetime, istio_namespace: str = "istio-system") -> Telemetry:
    """Everything Prometheus can say about [start, end] for ``namespaces`` (all when empty)."""
    if prometheus is None:
        return Telemetry(start, end, findings=(codes.finding(
            "MB6001", origin="Prometheus", missing=f"{EDGES_AND_ONSETS}, istiod trends"),))
    asker = _Asker(prometheus)
    edges = asker.ask(lambda: failing_edges(prometheus, namespaces, start, end), EDGES_AND_ONSETS) or []
    if not edges and not asker.down:
        present = asker.ask(lambda: has_istio_metrics(prometheus, namespaces, start, end), EDGES_AND_ONSETS)
        if present is False:
            scope = f" for namespaces {', '.join(namespaces)}" if namespaces else ""
            asker.problems.append(codes.finding("MB6004", origin=f"Prometheus {prometheus.url}",
                                                endpoint=prometheus.url, scope=scope, start=rfc3339(start),
                                                end=rfc3339(end)))
    tcp = asker.ask(lambda: failing_tcp_edges(prometheus, namespaces, start, end), "failing TCP connections") or []
    trends = asker.ask(lambda: read_trends(prometheus, istio_namespace, start, end), "istiod trends")
    trends = trends or IstiodTrends()
    found = [*(_edge_finding(e) for e in edges), *(_tcp_finding(e, end - start) for e in tcp),
             *trend_findings(trends, istio_namespace, end - start)]
    return Telemetry(start, end, edges=tuple(edges), tcp_edges=tuple(tcp), istiod=trends,
                     findings=tuple(found + asker.problems))


class _Asker:
    """Runs one question at a time and turns failures into findings; stops asking once Prometheus is down."""

    def __init__(self, prometheus: PrometheusApi):
        self.prometheus = prometheus
        self.problems: list[Finding] = []
        self.down = False

    def ask(self, question: Callable[[], T], missing: str) -> T | None:
        if self.down:
            return None
        try:
            return question()
        except TooManySeries as exc:
            self.problems.append(codes.finding("MB6003", origin=f"Prometheus {self.prometheus.url}",
                                               count=exc.count, what=exc.purpose, limit=exc.limit, missing=missing))
        except (TransientError, ClusterError) as exc:
            # A timeout or refused connection will repeat for every further question: one finding, one wait.
            self.down = isinstance(exc, TransientError) or exc.status in (401, 403)
            self.problems.append(codes.finding("MB6002", origin=f"Prometheus {self.prometheus.url}",
                                               endpoint=self.prometheus.url, reason=_reason(exc),
                                               missing=missing))
        except MeshbotError as exc:
            self.problems.append(codes.finding("MB6002", origin=f"Prometheus {self.prometheus.url}",
                                               endpoint=self.prometheus.url, reason=str(exc), missing=missing))
        return None


def _reason(error: MeshbotError) -> str:
    return getattr(error, "reason", None) or str(error)


def _edge_finding(edge: FailingEdge) -> Finding:
    onset = edge.onset
    if onset and onset.at:
        since = f"since {rfc3339(onset.at)}"
    elif onset and onset.already_failing:
        since = "since before the window"
    else:
        since = "with no clear onset"
    return codes.finding(
        "MB6010", origin=f"Workload {edge.edge.destination.namespace}/{edge.edge.destination.name}",
        edge=str(edge.edge), errors=round(edge.errors), total=round(edge.total), percent=round(100 * edge.share),
        since=since, codes=edge.code_summary, evidence=edge.to_dict())


def _tcp_finding(edge: FailingEdge, window: timedelta) -> Finding:
    flags = " ".join(sorted(edge.flags))
    return codes.finding("MB6011", origin=f"Workload {edge.edge.destination.namespace}/{edge.edge.destination.name}",
                         edge=str(edge.edge), count=round(edge.errors), flags=flags, window=short_duration(window),
                         evidence=edge.to_dict())
