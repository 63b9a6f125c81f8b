"""Who calls a namespace or a workload: the source workloads with requests to it over the last window.

For an approval card's blast radius: the callers are who an mTLS mode change, a bypass or a restart reaches
beyond the pods it touches.  From ``istio_requests_total`` by ``source_workload``/``source_workload_namespace``
and ``destination_workload``/``destination_workload_namespace`` (https://istio.io/latest/docs/reference/config/
metrics/); a request between two sidecars is reported by both proxies, so each caller's count is the larger of
the two reporters' (a caller without a sidecar is seen only by the server's, as ``source_workload="unknown"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from commands.clients.prometheus import PrometheusApi
from commands.telemetry import metrics as m

WINDOW = timedelta(hours=1)
"""An hour of traffic names the callers a change reaches now, including ones that call every few minutes."""
MAX_CALLERS = 10
"""topk: a card names the busiest callers; the rest are counted, not listed."""


@dataclass(frozen=True)
class Caller:
    namespace: str
    workload: str
    requests: float

    def __str__(self) -> str:
        if self.workload == "unknown":
            return "callers without a sidecar (source unknown)"
        return f"{self.workload}.{self.namespace}"


def callers_of(prometheus: PrometheusApi, namespace: str, workload: str | None, at: datetime, *,
               window: timedelta = WINDOW, limit: int = MAX_CALLERS) -> list[Caller]:
    """The busiest source workloads with requests to ``workload`` (None: any workload) in ``namespace`` in the
    ``window`` ending at ``at``, busiest first; the destination's own calls to itself are left out."""
    matchers = [f"{m.DESTINATION_NAMESPACE}={m.quote(namespace)}"]
    if workload:
        matchers.append(f"{m.DESTINATION_WORKLOAD}={m.quote(workload)}")
    requests = m.selector(m.REQUESTS, *matchers)
    per_source = (m.SOURCE_NAMESPACE, m.SOURCE_WORKLOAD)
    seconds = max(int(window.total_seconds()), 60)
    query = (f"topk({limit + 1}, max {m.by(per_source)} "
             f"(sum {m.by((m.REPORTER, *per_source))} (increase({requests}[{seconds}s]))))")
    found = [Caller(s.labels.get(m.SOURCE_NAMESPACE, ""), s.labels.get(m.SOURCE_WORKLOAD, "unknown"), s.last or 0.0)
             for s in prometheus.query(query, at, purpose="callers")]
    # topk asks for one more than shown, so a workload calling itself does not leave the card one short.
    outside = [c for c in found if c.requests > 0 and not (c.namespace == namespace and workload
                                                           and c.workload == workload)]
    return sorted(outside, key=lambda c: (-c.requests, c.namespace, c.workload))[:limit]
