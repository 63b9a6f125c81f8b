"""The failing edges' error share around an action's execution, from Istio's standard metrics in Prometheus.

Verification by effect asks two questions of ``istio_requests_total`` (https://istio.io/latest/docs/reference/
config/metrics/, "Istio Standard Metrics": a counter per reporter, source and destination workload and
namespace, ``response_code`` and ``response_flags``): before the first write, which edges in scope failed in the
window ending then (``BEFORE``, topk-bounded), with all their requests; after it, the same edges' requests and
failures since the execution.  ``increase()`` over each window turns the counters into counts
(https://prometheus.io/docs/prometheus/latest/querying/functions/#increase), so the share after is the share of
the requests made since the change, not a cumulative one diluted by the outage.

A request between two sidecars is counted by both (``reporter``: ``source``/``destination``); each edge is
counted once, from the client's proxy when it reports (it also sees failures that never reached the server:
UH, UF, NR), as ``commands.telemetry.edges`` does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from commands.clients.prometheus import PrometheusApi, Series
from commands.telemetry import metrics as m
from commands.telemetry.edges import PREFERRED_REPORTER

BEFORE = timedelta(minutes=5)
"""The baseline window before the first write: long enough for several scrapes at Prometheus's common 15-60 s
intervals, short enough to be the outage as it is now rather than an hour ago."""
MAX_EDGES = 20
"""Failing edges followed per execution: topk keeps the worst, so a mesh-wide outage stays one bounded answer."""
SERIES_PER_EDGE = 2
"""topk counts series, not edges: a failing edge between two sidecars is reported by both."""
EDGE_KEY_LABELS = (m.REPORTER, m.SOURCE_NAMESPACE, m.SOURCE_WORKLOAD, m.DESTINATION_NAMESPACE,
                   m.DESTINATION_WORKLOAD)

Counts = tuple[float, float]
"""(requests, failed requests) in a window."""


def edge_key(source_namespace: str, source: str, destination_namespace: str, destination: str) -> str:
    """``shop/frontend -> shop/payments``: namespaces and workload names never contain ``/`` or `` -> ``."""
    return f"{source_namespace}/{source} -> {destination_namespace}/{destination}"


def _parts(key: str) -> tuple[str, str, str, str]:
    source, destination = key.split(" -> ", 1)
    source_namespace, source_name = source.split("/", 1)
    destination_namespace, destination_name = destination.split("/", 1)
    return source_namespace, source_name, destination_namespace, destination_name


def failing_edges_before(prometheus: PrometheusApi, namespace: str | None, at: datetime,
                         window: timedelta = BEFORE, *, limit: int = MAX_EDGES) -> dict[str, Counts]:
    """The edges in scope (either end in ``namespace``; None: the mesh) with failed requests in the ``window``
    ending at ``at``, worst first, with their requests and failures."""
    namespaces = [namespace] if namespace else []
    # istio_requests_total{response_code=~"5..|0|401|403|429"} per reporter and workload edge
    # (https://istio.io/latest/docs/reference/config/metrics/#metrics and #labels).
    errors = m.selector(m.REQUESTS, f"{m.RESPONSE_CODE}=~{m.quote(m.ERROR_CODES)}", m.SCOPE)
    query = (f"topk({limit * SERIES_PER_EDGE}, sum {m.by(EDGE_KEY_LABELS)} "
             f"({_union(f'increase({errors}[{_seconds(window)}])', namespaces)}))")
    worst: dict[str, float] = {}
    for series in prometheus.query(query, at, purpose="failing edges before the change"):
        if (series.last or 0) > 0:
            worst[_key(series.labels)] = max(worst.get(_key(series.labels), 0.0), series.last or 0.0)
    keys = sorted(worst, key=lambda k: (-worst[k], k))[:limit]
    return edge_counts(prometheus, namespace, keys, at, window) if keys else {}


def edge_counts(prometheus: PrometheusApi, namespace: str | None, keys: Sequence[str], at: datetime,
                window: timedelta) -> dict[str, Counts]:
    """Requests and failed requests of each edge in ``keys`` in the ``window`` ending at ``at``; an edge with no
    requests in it is left out (not measured, never "recovered")."""
    if not keys:
        return {}
    namespaces = [namespace] if namespace else []
    parts = [_parts(k) for k in keys]
    only = (f"{m.SOURCE_WORKLOAD}=~{m.quote(m.alternatives(p[1] for p in parts))}",
            f"{m.DESTINATION_WORKLOAD}=~{m.quote(m.alternatives(p[3] for p in parts))}")
    seconds = _seconds(window)
    # All requests and the failed ones of those edges, per reporter (Istio's standard metrics, as above).
    requests = m.selector(m.REQUESTS, *only, m.SCOPE)
    errors = m.selector(m.REQUESTS, *only, f"{m.RESPONSE_CODE}=~{m.quote(m.ERROR_CODES)}", m.SCOPE)
    totals = prometheus.query(f"sum {m.by(EDGE_KEY_LABELS)} ({_union(f'increase({requests}[{seconds}])', namespaces)})",
                              at, purpose="edge requests around the change")
    failed = prometheus.query(f"sum {m.by(EDGE_KEY_LABELS)} ({_union(f'increase({errors}[{seconds}])', namespaces)})",
                              at, purpose="edge failures around the change")
    return {k: v for k, v in _merge_reporters(totals, failed).items() if k in set(keys) and v[0] > 0}


def _merge_reporters(totals: Iterable[Series], failed: Iterable[Series]) -> dict[str, Counts]:
    """Per edge, the preferred reporter's requests and failures (the cross product of the workload matchers may
    add edges nobody asked about; the caller drops them)."""
    requests: dict[str, dict[str, float]] = defaultdict(dict)
    errors: dict[str, dict[str, float]] = defaultdict(dict)
    for series in totals:
        requests[_key(series.labels)][series.labels.get(m.REPORTER, "")] = series.last or 0.0
    for series in failed:
        errors[_key(series.labels)][series.labels.get(m.REPORTER, "")] = series.last or 0.0
    merged: dict[str, Counts] = {}
    for key, by_reporter in requests.items():
        reporter = next((r for r in PREFERRED_REPORTER if r in by_reporter), sorted(by_reporter)[0])
        merged[key] = (by_reporter[reporter], errors[key].get(reporter, 0.0))
    return merged


def _key(labels: Mapping[str, str]) -> str:
    return edge_key(labels.get(m.SOURCE_NAMESPACE, ""), labels.get(m.SOURCE_WORKLOAD, "unknown"),
                    labels.get(m.DESTINATION_NAMESPACE, ""), labels.get(m.DESTINATION_WORKLOAD, "unknown"))


def _union(expression: str, namespaces: Sequence[str]) -> str:
    return " or ".join(f"({part})" if namespaces else part for part in m.scoped(expression, namespaces))


def _seconds(window: timedelta) -> str:
    """A PromQL range of whole seconds; increase() over less than two scrapes answers nothing, which reads as
    "no requests yet" rather than as recovery."""
    return f"{max(int(window.total_seconds()), 1)}s"
