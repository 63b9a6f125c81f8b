"""One timeline of an outage: the onset, the failing edges, the changes and Warning Events around it.

``build_timeline`` puts together what was read (from a live cluster and Prometheus, or from captured
files for the demo); ``timeline_text`` and ``Timeline.to_dict`` render it for ``meshbot timeline``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from commands.clients.kube import KubeClient
from commands.clients.prometheus import CapturedPrometheus, PrometheusApi
from commands.cluster.sources.yaml_fast import SAFE_LOADER
from commands.errors import InputError
from commands.findings import Finding, by_severity
from commands.telemetry.changes import Change, changes_between, changes_from_objects, read_changes
from commands.telemetry.events import EventEvidence, event_findings, read_events, summarize_events
from commands.telemetry.telemetry import Telemetry, read_telemetry
from commands.times import human_duration, rfc3339

CHANGES_BEFORE = timedelta(hours=2)
"""Changes shown from this long before the window: a config applied an hour before the alert still matters."""


@dataclass(frozen=True)
class Timeline:
    at: datetime
    namespaces: tuple[str, ...]
    telemetry: Telemetry
    changes: tuple[Change, ...]
    events: tuple[EventEvidence, ...]
    problems: tuple[Finding, ...] = ()
    """What the cluster would not tell (RBAC, timeouts)."""

    @property
    def onset(self) -> datetime | None:
        return self.telemetry.onset

    @property
    def empty(self) -> bool:
        """Nothing to show: no failing edge, no change and no event (a scenario with no captured telemetry)."""
        return not (self.telemetry.edges or self.telemetry.tcp_edges or self.changes or self.events)

    @property
    def findings(self) -> list[Finding]:
        return by_severity([*self.telemetry.findings, *event_findings(self.events), *self.problems])

    def last_change_before_onset(self) -> Change | None:
        if self.onset is None:
            return None
        before = [c for c in self.changes if c.at <= self.onset]
        return before[-1] if before else None

    def to_dict(self) -> dict[str, Any]:
        return {"at": rfc3339(self.at), "namespaces": list(self.namespaces), **self.telemetry.to_dict(),
                "changes": [c.to_dict() for c in self.changes], "events": [e.to_dict() for e in self.events],
                "findings": [f.to_dict() for f in self.findings]}


def build_timeline(*, at: datetime, since: timedelta, namespaces: Sequence[str], istio_namespace: str,
                   prometheus: PrometheusApi | None, changes: Iterable[Change],
                   events: Iterable[Mapping[str, Any]], problems: Iterable[Finding] = ()) -> Timeline:
    start, end = at - since, at + timedelta(minutes=5)
    telemetry = read_telemetry(prometheus, namespaces=namespaces, start=start, end=end,
                               istio_namespace=istio_namespace)
    return Timeline(at=at, namespaces=tuple(namespaces), telemetry=telemetry,
                    changes=tuple(changes_between(changes, start - CHANGES_BEFORE, end)),
                    events=tuple(summarize_events(events, namespaces, istio_namespace)),
                    problems=tuple(problems))


def live_timeline(client: KubeClient, prometheus: PrometheusApi | None, *, at: datetime, since: timedelta,
                  namespaces: Sequence[str], istio_namespace: str) -> Timeline:
    changes, change_problems = read_changes(client, namespaces, istio_namespace)
    events, event_problems = read_events(client, namespaces, istio_namespace)
    return build_timeline(at=at, since=since, namespaces=namespaces, istio_namespace=istio_namespace,
                          prometheus=prometheus, changes=changes, events=events,
                          problems=[*change_problems, *event_problems])


def captured_timeline(directory: str | Path, *, at: datetime, since: timedelta, namespaces: Sequence[str],
                      istio_namespace: str = "istio-system") -> Timeline:
    """The timeline from captured answers: ``prometheus/<purpose>.json`` and ``cluster/*.yaml`` (objects with
    their managedFields, and Events), as the demo ships them."""
    directory = Path(directory)
    objects = list(_objects(directory / "cluster"))
    prometheus_dir = directory / "prometheus"
    return build_timeline(at=at, since=since, namespaces=namespaces, istio_namespace=istio_namespace,
                          prometheus=CapturedPrometheus(prometheus_dir) if prometheus_dir.is_dir() else None,
                          changes=changes_from_objects(objects, namespaces, istio_namespace),
                          events=[o for o in objects if o.get("kind") == "Event"])


def _objects(directory: Path) -> Iterable[dict[str, Any]]:
    for path in sorted(directory.glob("*.yaml")):
        try:
            # libyaml's safe loader (the same values as yaml.safe_load_all): every incident's timeline in a demo
            # storm reads these files, and the pure-Python parser held the serving process's GIL doing it.
            documents = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER))
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read captured objects: {exc}", path=str(path)) from None
        for document in documents:
            if isinstance(document, dict):
                yield from (document.get("items") or []) if document.get("kind") == "List" else [document]


# -- text ------------------------------------------------------------------------------------------------


def timeline_text(timeline: Timeline, *, source: str) -> str:
    scope = f"namespaces {', '.join(timeline.namespaces)}" if timeline.namespaces else "all namespaces"
    telemetry = timeline.telemetry
    lines = [f"meshbot timeline | {scope} | {source} | {rfc3339(telemetry.start)} .. {rfc3339(telemetry.end)}", ""]
    lines += _onset_lines(timeline)
    lines += ["", "Failing edges (worst first):"] + (_edge_lines(telemetry) or ["  none seen"])
    lines += ["", "Changes:"] + (_change_lines(timeline) or ["  none in the window"])
    lines += ["", "Warning events:"] + (_event_lines(timeline.events) or ["  none"])
    others = [f for f in timeline.findings if f.code not in ("MB6010", "MB6011", "MB6030")]
    if others:
        lines += ["", "Also:"] + [f"  {f.level:<7} {f.code}  {f.message}" for f in others]
    return "\n".join(lines) + "\n"


def _onset_lines(timeline: Timeline) -> list[str]:
    onset = timeline.onset
    if onset is None:
        return ["Onset: none seen in the window"]
    first = next(e for e in timeline.telemetry.edges if e.onset and e.onset.at == onset)
    lines = [f"Onset: {rfc3339(onset)} ({human_duration(timeline.at - onset)} before {rfc3339(timeline.at)}), "
             f"first on {first.edge}"]
    last = timeline.last_change_before_onset()
    if last:
        lines.append(f"Last change before it: {last.object} {last.what}"
                     + (f" by {last.manager}" if last.manager else "")
                     + f", {human_duration(onset - last.at)} before the onset")
    return lines


def _edge_lines(telemetry: Telemetry) -> list[str]:
    lines = []
    for edge in (*telemetry.edges, *telemetry.tcp_edges):
        if edge.onset and edge.onset.at:
            since = f"since {edge.onset.at:%H:%M}"
        elif edge.onset and edge.onset.already_failing:
            since = "before the window"
        else:
            since = "no clear onset"
        share = f"{round(edge.errors)} of {round(edge.total)} failed ({round(100 * edge.share)}%)" \
            if edge.reporter != "tcp" else f"{round(edge.errors)} TCP connections failed"
        security = f"; {'/'.join(edge.security)}" if edge.security else ""
        lines.append(f"  {edge.edge}  {share}  {edge.code_summary}  [{since}; reporter {edge.reporter}{security}]")
    return lines


def _change_lines(timeline: Timeline) -> list[str]:
    lines = []
    for change in timeline.changes:
        note = ""
        if timeline.onset and change.at <= timeline.onset:
            note = f"  ({human_duration(timeline.onset - change.at)} before the onset)"
        lines.append(f"  {change.line()}{note}")
    return lines


def _event_lines(events: Iterable[EventEvidence]) -> list[str]:
    lines = []
    for event in events:
        seen = rfc3339(event.last_seen) if event.last_seen else "unknown"
        meaning = f" ({event.meaning})" if event.meaning else ""
        message = " ".join(event.message.split())[:160]
        lines.append(f"  {seen}  {event.reason} on {event.object} x{event.count}: {message}{meaning}")
    return lines
