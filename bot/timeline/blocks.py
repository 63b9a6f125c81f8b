"""The timeline's messages: the short thread reply (onset, worst edges, changes before the onset, Warning
Events), the top message's lines, and the graph's alt text.  Pure: data in, ``Message`` out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.slack.blocks import Message, context, escape, header, message_of, plain, plural, section, slack_time
from bot.timeline.summary import TimelineSummary
from commands.telemetry.changes import Change
from commands.telemetry.edges import FailingEdge
from commands.telemetry.timeline import Timeline
from commands.times import human_duration

EDGES_SHOWN = 5
CHANGES_SHOWN = 5
EVENTS_SHOWN = 5
NOT_THE_MESH = ("MB6010", "MB6011", "MB6030")
"""The timeline's own findings (failing edges, onsets, events) are shown as lines; others are notes."""


def top_lines(summary: TimelineSummary) -> list[str]:
    """The top message's lines, most telling first (a short top message drops from the end): when it started and
    on which edge, the last change before it, then every failing edge."""
    lines = []
    if summary.onset is not None:
        ahead = human_duration(summary.at - summary.onset)
        where = f" on `{escape(summary.first_edge)}`" if summary.first_edge else ""
        lines.append(f"*Started:* {slack_time(summary.onset)} ({ahead} before the alert){where}")
    if summary.last_change:
        lines.append(f"*Last change before it:* {escape(summary.last_change)}")
    if summary.edges:
        lines.append("*Failing:* " + " \u00b7 ".join(f"`{escape(e.text())}`" for e in summary.edges))
    return lines


def timeline_message(timeline: Timeline, title: str, *, source: str, timing: str | None = None,
                     graph: bool = False) -> Message:
    """The thread's short timeline; the full text is attached beside it (``timeline_text``)."""
    onset = timeline.onset
    blocks = [header(title), section("\n".join(_onset_lines(timeline, timing)))]
    edges = [*timeline.telemetry.edges, *timeline.telemetry.tcp_edges]
    if edges:
        blocks.append(section("*Failing edges* (worst first)\n" + "\n".join(_edge_line(e) for e in edges[:EDGES_SHOWN])
                              + (f"\n_+{len(edges) - EDGES_SHOWN} more in the attached timeline_"
                                 if len(edges) > EDGES_SHOWN else "")))
    before = [c for c in timeline.changes if onset is None or c.at <= onset][-CHANGES_SHOWN:]
    if before:
        heading = "*Changes before the onset*" if onset else "*Changes in the window*"
        blocks.append(section(heading + "\n" + "\n".join(_change_line(c, onset) for c in before)))
    warnings = [e for e in timeline.events if e.type == "Warning"]
    if warnings:
        blocks.append(section("*Warning events*\n" + "\n".join(
            f"\u2022 {escape(e.reason)} on `{escape(e.object)}` \u00d7{e.count}"
            + (f" \u2014 {escape(e.meaning)}" if e.meaning else "") for e in warnings[:EVENTS_SHOWN])))
    notes = [f for f in timeline.findings if f.code not in NOT_THE_MESH]
    if notes:
        blocks.append(section("\n".join(f"`{f.code}` {escape(f.message)}" for f in notes[:5])))
    attached = "the full timeline is attached" + (" with the error-ratio graph" if graph else "")
    blocks.append(context(f"From {escape(source)}; {attached}. Window "
                          f"{timeline.telemetry.start:%H:%M}\u2013{timeline.telemetry.end:%H:%M} UTC."))
    return message_of(f"{plain(title)}: " + _fallback(timeline), blocks)


def graph_alt_text(timeline: Timeline) -> str:
    """What a screen reader says for the graph (Slack's ``alt_txt``)."""
    edges = [e for e in timeline.telemetry.edges if e.ratio]
    if not edges:
        return "Error ratio graph: no failing edge in the window."
    worst = edges[0]
    onset = f"; errors began at {timeline.onset:%H:%M} UTC" if timeline.onset else ""
    changes = f"; {plural(len(timeline.changes), 'change')} marked" if timeline.changes else ""
    return (f"Error ratio of {plural(len(edges), 'failing edge')}, worst {worst.edge} at "
            f"{round(100 * worst.share)}% failed{onset}{changes}.")


def _onset_lines(timeline: Timeline, timing: str | None) -> list[str]:
    onset = timeline.onset
    if onset is None:
        return ["*Onset:* none seen in the window" + ("" if timeline.telemetry.edges else " (no failing edge)")]
    first = next((e for e in (*timeline.telemetry.edges, *timeline.telemetry.tcp_edges)
                  if e.onset and e.onset.at == onset), None)
    lines = [f"*Onset:* {slack_time(onset)}, {human_duration(timeline.at - onset)} before the alert"
             + (f", first on `{escape(str(first.edge))}`" if first else "")]
    if timing:
        lines.append(f":clock3: {escape(timing)}")
    return lines


def _edge_line(edge: FailingEdge) -> str:
    if edge.onset and edge.onset.at:
        since = f"since {edge.onset.at:%H:%M}"
    elif edge.onset and edge.onset.already_failing:
        since = "before the window"
    else:
        since = "no clear onset"
    share = f"{round(100 * edge.share)}% failed" if edge.reporter != "tcp" else f"{round(edge.errors)} TCP failures"
    return f"\u2022 `{escape(str(edge.edge))}` {share}, {escape(edge.code_summary)} ({since})"


def _change_line(change: Change, onset: datetime | None) -> str:
    by = f" by {escape(change.manager)}" if change.manager else ""
    lead = f" \u2014 {human_duration(onset - change.at)} before the onset" if onset else ""
    return f"\u2022 {change.at:%H:%M} `{escape(change.object)}` {escape(change.what)}{by}{lead}"


def _fallback(timeline: Timeline) -> str:
    if timeline.onset is None:
        return "no onset in the window"
    edges: Sequence[FailingEdge] = timeline.telemetry.edges
    worst = f", worst {plain(str(edges[0].edge))}" if edges else ""
    return f"errors began at {timeline.onset:%H:%M} UTC{worst}"
