"""When a series left its baseline: the onset of an edge's errors (pure).

The baseline is the median of the window's first points (a quarter, at most ``BASELINE_POINTS``), its noise the median absolute deviation.
A point *departs* when it is above ``baseline + max(min_rise, 3 × 1.4826 × MAD)`` (1.4826 scales the MAD
to a standard deviation for normal noise); the onset is the first departing point that starts a
*sustained* excursion (at least ``min_share`` of the next ``sustain`` points depart, so one scrape's spike
is not an outage but a flapping edge is), walked back over the points that were already rising above
the noise floor, so a ramp's onset is where it began, not where it crossed the threshold.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

MAD_TO_SIGMA = 1.4826
BASELINE_POINTS = 8
"""At most this many leading points make the baseline (4 minutes at a 30 s step): an alert window opened
shortly before the onset must still see a normal stretch."""


@dataclass(frozen=True)
class OnsetRule:
    min_rise: float = 0.05
    """Error-ratio points above the baseline that count as a departure (5 %: Istio's Mesh Dashboard colours a
    workload's success rate red under 95 %, its "Success Rate" thresholds ``.95, 1.00`` in
    manifests/addons/dashboards/istio-mesh-dashboard.json)."""
    sustain: int = 4
    """Points (of the query step) that make up one excursion."""
    min_share: float = 0.5
    """Share of those points that must depart: 0.5 keeps an edge that flaps every other minute."""
    noise_floor: float = 0.01
    """How far above the baseline a point counts as rising, when walking a ramp back to its start."""


DEFAULT_RULE = OnsetRule()


@dataclass(frozen=True)
class Onset:
    at: datetime | None
    """When the excursion began; None when the series was already away from normal at the window's start."""
    baseline: float
    peak: float
    already_failing: bool = False

    @property
    def started_before_window(self) -> bool:
        return self.already_failing


def find_onset(points: Sequence[tuple[float, float]], rule: OnsetRule = DEFAULT_RULE) -> Onset | None:
    """The onset of the first sustained excursion of ``points`` ((unix seconds, value), in time order),
    or None when the series never leaves its baseline."""
    if len(points) < max(rule.sustain, 4):
        return None
    values = [value for _, value in points]
    head = values[:max(min(len(values) // 4, BASELINE_POINTS), 3)]
    baseline = statistics.median(head)
    spread = statistics.median(abs(v - baseline) for v in head) * MAD_TO_SIGMA
    peak = max(values)
    if baseline >= rule.min_rise and _sustained(head, 0, rule.min_rise, rule):
        # Already failing when the window opened: there is no departure to see inside it.
        return Onset(at=None, baseline=baseline, peak=peak, already_failing=True)
    threshold = baseline + max(rule.min_rise, 3 * spread)
    for index, value in enumerate(values):
        if value > threshold and _sustained(values, index, threshold, rule):
            start = _walk_back(values, index, baseline + max(rule.noise_floor, 3 * spread))
            return Onset(at=_moment(points[start][0]), baseline=baseline, peak=peak)
    return None


def _sustained(values: Sequence[float], index: int, threshold: float, rule: OnsetRule) -> bool:
    window = values[index:index + rule.sustain]
    if len(window) < min(rule.sustain, 2):
        return False
    return sum(v > threshold for v in window) / len(window) >= rule.min_share


def _walk_back(values: Sequence[float], index: int, floor: float) -> int:
    while index > 0 and floor < values[index - 1] <= values[index]:
        index -= 1
    return index


def _moment(unix_seconds: float) -> datetime:
    return datetime.fromtimestamp(unix_seconds, tz=timezone.utc)
