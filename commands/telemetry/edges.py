"""The failing edges (source workload -> destination workload) around an alert, and each one's onset.

Three questions to Prometheus, each bounded (topk, the client's series cap, a window of at most a day):
failed requests by edge, code and response flags over the window; all requests on those edges; and the
error ratio of those edges over time, whose departure from its baseline is the onset.  Both reporters
are read: a request between two sidecars is reported by each (https://istio.io/latest/docs/reference/
config/metrics/#labels), so an edge is counted once, from the client's proxy when it reports (it also sees
the failures that never left it: UH, UF, UO, NR), else from the server's (a caller without a sidecar).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from commands.clients.prometheus import PrometheusApi, Series
from commands.telemetry import metrics as m
from commands.telemetry.onset import DEFAULT_RULE, Onset, OnsetRule, find_onset
from commands.times import rfc3339

MAX_EDGES = 50
"""Failing edges read in detail: topk keeps the worst, so a mesh-wide outage stays one bounded answer."""
SERIES_PER_EDGE = 4
"""topk counts series, not edges: a failing edge is reported by both sidecars, often with two codes or flags."""
STEP = timedelta(seconds=30)
RATE_WINDOW = "2m"
"""rate() needs at least two scrapes in its window; 2m covers Prometheus's common 15s-60s intervals."""
PREFERRED_REPORTER = ("source", "destination", "waypoint")


@dataclass(frozen=True, order=True)
class Workload:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.name}.{self.namespace}" if self.namespace not in ("", "unknown") else self.name


@dataclass(frozen=True, order=True)
class Edge:
    source: Workload
    destination: Workload

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination}"

    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset({self.source.namespace, self.destination.namespace}) - {"", "unknown"}


@dataclass(frozen=True)
class FailingEdge:
    edge: Edge
    service: str
    reporter: str
    """The reporter counted (``source`` preferred), or ``tcp`` for TCP connections closed with a flag."""
    errors: float
    total: float
    codes: Mapping[str, float]
    flags: Mapping[str, float]
    """Envoy response flags seen on failed requests, from either reporter (``-``: none)."""
    security: tuple[str, ...] = ()
    """connection_security_policy the server's proxy reported (``mutual_tls``, ``none``); empty when unknown."""
    onset: Onset | None = None
    ratio: tuple[tuple[float, float], ...] = field(default=(), repr=False)

    @property
    def share(self) -> float:
        return self.errors / self.total if self.total else 1.0

    @property
    def code_summary(self) -> str:
        """``403 ×120, 503 UH ×4``: codes by count, the flags after them."""
        codes = ", ".join(f"{code} ×{round(n)}" for code, n in sorted(self.codes.items(), key=lambda i: -i[1]))
        flags = [f for f in sorted(self.flags, key=lambda f: -self.flags[f]) if f != "-"]
        return f"{codes} (flags {' '.join(flags)})" if flags else codes

    def to_dict(self) -> dict:
        return {"source": str(self.edge.source), "destination": str(self.edge.destination),
                "service": self.service, "reporter": self.reporter, "errors": round(self.errors),
                "total": round(self.total), "share": round(self.share, 4), "codes": dict(self.codes),
                "flags": dict(self.flags), "connection_security": list(self.security),
                "onset": rfc3339(self.onset.at) if self.onset and self.onset.at else None,
                "failing_before_window": bool(self.onset and self.onset.already_failing)}


def failing_edges(prometheus: PrometheusApi, namespaces: Sequence[str], start: datetime, end: datetime, *,
                  rule: OnsetRule = DEFAULT_RULE, limit: int = MAX_EDGES) -> list[FailingEdge]:
    """The edges with failed requests in [start, end], worst first, each with its onset."""
    window = _duration(end - start)
    failed = prometheus.query(_failures_query(namespaces, window, limit * SERIES_PER_EDGE), end,
                              purpose="failing edges")
    by_edge = dict(sorted(_merge_reporters(failed).items(), key=lambda item: -item[1].errors)[:limit])
    if not by_edge:
        return []
    # Only the failing edges' sources and destinations: the cross product may add a few healthy edges, but
    # not every caller of a busy destination.
    sources = sorted({e.source.name for e in by_edge})
    destinations = sorted({e.destination.name for e in by_edge})
    traffic = prometheus.query(_traffic_query(sources, destinations, namespaces, window), end,
                               purpose="edge traffic")
    totals = _per_edge(traffic)
    ratios = _per_edge_series(prometheus.query_range(_ratio_query(sources, destinations, namespaces), start, end,
                                                     STEP, purpose="edge error ratio"))
    edges = []
    for edge, seen in by_edge.items():
        points = ratios.get((seen.reporter, edge)) or next((s for (r, e), s in ratios.items() if e == edge), ())
        failing = FailingEdge(edge=edge, service=seen.service, reporter=seen.reporter, errors=seen.errors,
                              total=max(totals.get((seen.reporter, edge), 0.0), seen.errors), codes=seen.codes,
                              flags=seen.flags, security=seen.security, onset=find_onset(points, rule),
                              ratio=tuple(points))
        # A steady trickle of errors (a few 503s among thousands of requests) is how healthy traffic looks:
        # an edge fails when its ratio left its baseline, or when errors are a real share of it all along.
        if failing.onset or failing.share >= rule.min_rise:
            edges.append(failing)
    return sorted(edges, key=lambda e: (-e.share * e.errors, str(e.edge)))


def failing_tcp_edges(prometheus: PrometheusApi, namespaces: Sequence[str], start: datetime,
                      end: datetime) -> list[FailingEdge]:
    """TCP edges whose connections closed with an Envoy response flag (UF, UH, …) in the window."""
    flagged = m.selector(m.TCP_CLOSED, f"{m.RESPONSE_FLAGS}!={m.quote('-')}", m.SCOPE)
    expression = f"increase({flagged}[{_duration(end - start)}])"
    query = f"topk({MAX_EDGES}, sum {m.by((*m.EDGE_LABELS, m.RESPONSE_FLAGS))} ({_union(expression, namespaces)}))"
    closed = [s for s in prometheus.query(query, end, purpose="failing TCP connections") if (s.last or 0) > 0]
    merged: dict[Edge, dict[str, float]] = defaultdict(dict)
    services: dict[Edge, str] = {}
    for series in closed:
        edge = _edge(series.labels)
        flag = series.labels.get(m.RESPONSE_FLAGS, "-")
        merged[edge][flag] = max(merged[edge].get(flag, 0.0), series.last or 0.0)
        services[edge] = series.labels.get(m.DESTINATION_SERVICE, "")
    return [FailingEdge(edge=edge, service=services[edge], reporter="tcp", errors=sum(flags.values()),
                        total=0.0, codes={"tcp": sum(flags.values())}, flags=flags)
            for edge, flags in sorted(merged.items())]


def has_istio_metrics(prometheus: PrometheusApi, namespaces: Sequence[str], start: datetime,
                      end: datetime) -> bool:
    """Whether any of Istio's request or TCP series in scope has samples in the window."""
    names = f"__name__=~{m.quote(m.alternatives((m.REQUESTS, m.TCP_OPENED, m.TCP_CLOSED)))}"
    expression = f"last_over_time({{{names},{m.SCOPE}}}[{_duration(end - start)}])"
    answer = prometheus.query(f"count({_union(expression, namespaces)})", end, purpose="Istio's request metrics")
    return any((s.last or 0) > 0 for s in answer)


# -- queries -----------------------------------------------------------------------------------------


def _union(expression: str, namespaces: Sequence[str]) -> str:
    return " or ".join(f"({part})" if len(namespaces) else part for part in m.scoped(expression, namespaces))


def _failures_query(namespaces: Sequence[str], window: str, limit: int) -> str:
    errors = m.selector(m.REQUESTS, f"{m.RESPONSE_CODE}=~{m.quote(m.ERROR_CODES)}", m.SCOPE)
    return f"topk({limit}, sum {m.by(m.FAILURE_LABELS)} ({_union(f'increase({errors}[{window}])', namespaces)}))"


def _only(sources: Sequence[str], destinations: Sequence[str]) -> tuple[str, str]:
    return (f"{m.SOURCE_WORKLOAD}=~{m.quote(m.alternatives(sources))}",
            f"{m.DESTINATION_WORKLOAD}=~{m.quote(m.alternatives(destinations))}")


def _traffic_query(sources: Sequence[str], destinations: Sequence[str], namespaces: Sequence[str],
                   window: str) -> str:
    requests = m.selector(m.REQUESTS, *_only(sources, destinations), m.SCOPE)
    return f"sum {m.by(m.EDGE_LABELS)} ({_union(f'increase({requests}[{window}])', namespaces)})"


def _ratio_query(sources: Sequence[str], destinations: Sequence[str], namespaces: Sequence[str]) -> str:
    only = _only(sources, destinations)
    errors = m.selector(m.REQUESTS, *only, f"{m.RESPONSE_CODE}=~{m.quote(m.ERROR_CODES)}", m.SCOPE)
    requests = m.selector(m.REQUESTS, *only, m.SCOPE)
    failed = f"sum {m.by(m.EDGE_LABELS)} ({_union(f'rate({errors}[{RATE_WINDOW}])', namespaces)})"
    total = f"sum {m.by(m.EDGE_LABELS)} ({_union(f'rate({requests}[{RATE_WINDOW}])', namespaces)})"
    # An edge with traffic but no failure at a step has no error series there: ``or 0 * total`` makes its
    # ratio 0 rather than a gap, so a baseline of healthy traffic is seen as healthy.
    return f"({failed} or 0 * {total}) / {total}"


# -- answers -----------------------------------------------------------------------------------------


def _edge(labels: Mapping[str, str]) -> Edge:
    return Edge(Workload(labels.get(m.SOURCE_NAMESPACE, ""), labels.get(m.SOURCE_WORKLOAD, "unknown")),
                Workload(labels.get(m.DESTINATION_NAMESPACE, ""), labels.get(m.DESTINATION_WORKLOAD, "unknown")))


@dataclass(frozen=True)
class _Seen:
    """One edge's failures as the failing-edges query saw them, reporters merged."""

    reporter: str
    service: str
    codes: dict[str, float]
    flags: dict[str, float]
    security: tuple[str, ...]

    @property
    def errors(self) -> float:
        return sum(self.codes.values())


def _merge_reporters(failed: Iterable[Series]) -> dict[Edge, _Seen]:
    """Per edge: the preferred reporter's counts by code, the flags either reporter saw, and the connection
    security the server's proxy reported (the client's says ``unknown``: it cannot know how the server
    terminated the connection)."""
    counts: dict[Edge, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    flags: dict[Edge, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    services: dict[Edge, str] = {}
    security: dict[Edge, set[str]] = defaultdict(set)
    for series in failed:
        value = series.last or 0.0
        if value <= 0:
            continue
        edge, labels = _edge(series.labels), series.labels
        reporter = labels.get(m.REPORTER, "")
        counts[edge][reporter][labels.get(m.RESPONSE_CODE, "")] += value
        flags[edge][reporter][labels.get(m.RESPONSE_FLAGS, "-")] += value
        services.setdefault(edge, labels.get(m.DESTINATION_SERVICE, ""))
        if reporter == "destination" and labels.get(m.SECURITY_POLICY, "unknown") != "unknown":
            security[edge].add(labels[m.SECURITY_POLICY])
    merged = {}
    for edge, by_reporter in counts.items():
        reporter = next((r for r in PREFERRED_REPORTER if r in by_reporter), sorted(by_reporter)[0])
        # A flag is set by the proxy that failed the request (UH by the client's, UF on the server's inbound),
        # so each flag's count is the larger of the two reporters' rather than the preferred one's alone.
        seen: dict[str, float] = {}
        for per_flag in flags[edge].values():
            for flag, value in per_flag.items():
                seen[flag] = max(seen.get(flag, 0.0), value)
        merged[edge] = _Seen(reporter, services[edge], {c: round(v, 1) for c, v in by_reporter[reporter].items()},
                             {f: round(v, 1) for f, v in seen.items()}, tuple(sorted(security[edge])))
    return merged


def _per_edge(answer: Iterable[Series]) -> dict[tuple[str, Edge], float]:
    return {(s.labels.get(m.REPORTER, ""), _edge(s.labels)): s.last or 0.0 for s in answer}


def _per_edge_series(answer: Iterable[Series]) -> dict[tuple[str, Edge], tuple[tuple[float, float], ...]]:
    return {(s.labels.get(m.REPORTER, ""), _edge(s.labels)): s.points for s in answer}


def _duration(delta: timedelta) -> str:
    """A PromQL duration of whole seconds (at least one minute: increase() over less says little)."""
    return f"{max(int(delta.total_seconds()), 60)}s"
