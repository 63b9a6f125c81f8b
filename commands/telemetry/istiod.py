"""istiod over time: memory before an OOM, rejected pushes, convergence and CSR signing errors.

Each trend is one small query over the window (a handful of series: one per istiod pod at most) and
becomes a finding only past its rule, stated beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from commands import codes
from commands.clients.prometheus import PrometheusApi, Series
from commands.findings import Finding
from commands.telemetry import metrics as m
from commands.times import short_duration

STEP = timedelta(minutes=1)
MEMORY_GROWTH = 1.5
"""Working set rising to at least 1.5 times an earlier value in the window: growth, not a steady state."""
CONVERGENCE_WARNING_SECONDS = 5.0
"""pilot_proxy_convergence_time's buckets run 0.1 s to 30 s (pilot/pkg/xds/monitoring.go); a p99 past 5 s
means proxies run on configuration seconds old after every change."""


@dataclass(frozen=True)
class IstiodTrends:
    memory: tuple[Series, ...] = ()
    pushes_per_second: float | None = None
    rejects: float | None = None
    convergence_p99: float | None = None
    csr_sign_errors: float | None = None

    def to_dict(self) -> dict:
        return {"memory_peak_bytes": {s.labels.get("pod", "istiod"): max(v for _, v in s.points)
                                      for s in self.memory if s.points},
                "pushes_per_second": self.pushes_per_second, "rejects": self.rejects,
                "convergence_p99_seconds": self.convergence_p99, "csr_sign_errors": self.csr_sign_errors}


def read_trends(prometheus: PrometheusApi, istio_namespace: str, start: datetime, end: datetime) -> IstiodTrends:
    window = f"{max(int((end - start).total_seconds()), 60)}s"
    namespace = f"namespace={m.quote(istio_namespace)}"
    working_set = m.selector(m.WORKING_SET, namespace, f"container={m.quote(m.ISTIOD_CONTAINER)}")
    memory = prometheus.query_range(f"max by (pod) ({working_set})", start, end, STEP, purpose="istiod memory")
    if not memory:
        resident = m.selector(m.RESIDENT_MEMORY, namespace, f"app={m.quote('istiod')}")
        memory = prometheus.query_range(f"max by (pod) ({resident})", start, end, STEP, purpose="istiod memory")
    return IstiodTrends(
        memory=tuple(memory),
        pushes_per_second=_scalar(prometheus.query(f"sum(rate({m.PUSHES}[{window}]))", end, purpose="xDS pushes")),
        rejects=_scalar(prometheus.query(f"sum(increase({m.REJECTS}[{window}]))", end, purpose="xDS rejects")),
        convergence_p99=_scalar(prometheus.query(
            f"histogram_quantile(0.99, sum by (le) (rate({m.CONVERGENCE_BUCKET}[{window}])))", end,
            purpose="push convergence")),
        csr_sign_errors=_scalar(prometheus.query(f"sum(increase({m.CSR_SIGN_ERRORS}[{window}]))", end,
                                                 purpose="CSR signing errors")),
    )


def trend_findings(trends: IstiodTrends, istio_namespace: str, window: timedelta) -> list[Finding]:
    span = short_duration(window)
    found = [_memory_finding(series, istio_namespace, span) for series in trends.memory]
    if trends.rejects and trends.rejects >= 1:
        found.append(codes.finding("MB6021", origin=f"Deployment {istio_namespace}/istiod", count=round(trends.rejects),
                                   window=span, evidence={"rejects": trends.rejects}))
    if trends.convergence_p99 and trends.convergence_p99 > CONVERGENCE_WARNING_SECONDS:
        found.append(codes.finding("MB6022", origin=f"Deployment {istio_namespace}/istiod",
                                   seconds=f"{trends.convergence_p99:.1f}", window=span,
                                   threshold=f"{CONVERGENCE_WARNING_SECONDS:g}",
                                   evidence={"p99_seconds": trends.convergence_p99}))
    if trends.csr_sign_errors and trends.csr_sign_errors >= 1:
        found.append(codes.finding("MB6023", origin=f"Deployment {istio_namespace}/istiod",
                                   count=round(trends.csr_sign_errors), window=span,
                                   evidence={"csr_sign_errors": trends.csr_sign_errors}))
    return [f for f in found if f is not None]


def _memory_finding(series: Series, istio_namespace: str, span: str) -> Finding | None:
    growth = _largest_growth([v for _, v in series.points])
    if growth is None or growth[1] < growth[0] * MEMORY_GROWTH:
        return None
    low, high = growth
    pod = series.labels.get("pod", "istiod")
    return codes.finding("MB6020", origin=f"Pod {istio_namespace}/{pod}", pod=pod, first=_mib(low),
                         peak=_mib(high), window=span,
                         evidence={"low_bytes": low, "peak_bytes": high, "last_bytes": series.points[-1][1]})


def _largest_growth(values: Sequence[float]) -> tuple[float, float] | None:
    """(low, high) of the largest rise from a value to a later one: an OOM kill resets memory, and the climb
    after it counts as much as the one before."""
    best, low = None, None
    for value in values:
        low = value if low is None or value < low else low
        if low > 0 and (best is None or value / low > best[1] / best[0]):
            best = (low, value)
    return best


def _scalar(answer: Sequence[Series]) -> float | None:
    values = [s.last for s in answer if s.last is not None]
    return sum(values) if values else None


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"
