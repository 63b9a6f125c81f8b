"""istiod's ``/metrics`` (Prometheus text exposition, port 15014) read into samples, and sums and quantiles of them.

The certs check reads the CA's counters and expiry gauges from it, proxy-status the push health
(``commands.checks.push_health``); both go through this one parser.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

METRICS_PATH = "/metrics"
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


def parse_samples(text: str, names: Iterable[str] | None = None) -> list[Sample]:
    """Every sample line (``name{labels} value [timestamp]``) whose name is in ``names`` (all when None)."""
    wanted = set(names) if names is not None else None
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, brace, rest = line.partition("{")
        if brace and " " not in head:
            name = head
            labels_text, _, value_text = rest.rpartition("}")
        else:
            name, _, value_text = line.partition(" ")
            labels_text = ""
        if wanted is not None and name not in wanted:
            continue
        try:
            value = float(value_text.split()[0])
        except (IndexError, ValueError):
            continue
        samples.append(Sample(name, value, dict(_LABEL.findall(labels_text))))
    return samples


def total(samples: Sequence[Sample], name: str) -> float:
    """``name`` summed over its label sets (0 when absent)."""
    return sum(s.value for s in samples if s.name == name and math.isfinite(s.value))


def histogram_quantile(samples: Sequence[Sample], name: str, quantile: float) -> float | None:
    """The ``quantile`` of histogram ``name`` (its ``_bucket`` series summed over other labels), interpolated
    inside the bucket as Prometheus's histogram_quantile does; None when it has no observations."""
    buckets: dict[float, float] = {}
    for sample in samples:
        if sample.name != f"{name}_bucket" or "le" not in sample.labels:
            continue
        bound = float("inf") if sample.labels["le"] in ("+Inf", "Inf") else float(sample.labels["le"])
        buckets[bound] = buckets.get(bound, 0.0) + sample.value
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    rank = quantile * count
    lower, below = 0.0, 0.0
    for bound in bounds:
        cumulative = buckets[bound]
        if cumulative >= rank:
            if math.isinf(bound):
                return lower  # past the last finite bucket: Prometheus answers that bucket's upper bound
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower
