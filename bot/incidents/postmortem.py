"""A postmortem draft from the incident's timeline, in Markdown: what happened when, who approved what, what
changed, and how long it took to mitigate and to resolve.  Pure rendering.

A draft, not the postmortem: the facts the log holds (times, people, approvals, changes, status notes,
follow-ups) are filled in; the questions only people can answer (why, what made it worse) are left as
prompts, the way incident.io and PagerDuty seed theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.incidents.blocks import TopView
from bot.incidents.lifecycle import FollowUp, Lifecycle
from bot.incidents.records import Event, EventKind, Incident
from bot.incidents.report import DASH, NOISE, Style, describe_event, event_time, free_text, person
from bot.slack.blocks import human_duration

MARKDOWN = Style.MARKDOWN
CHANGE_KINDS = (str(EventKind.ACTION_EXECUTED), str(EventKind.ACTION_FAILED), "action_verified")
DECISION_KINDS = (str(EventKind.APPROVAL_REQUESTED), "approval_click", "approval_state")


def postmortem_markdown(incident: Incident, alerts: Sequence[dict[str, Any]], events: Sequence[Event],
                        lifecycle: Lifecycle, follow_ups: Sequence[FollowUp], now: datetime) -> str:
    view = TopView(incident=incident, alerts=alerts, lifecycle=lifecycle)
    started = view.started
    mitigated = lifecycle.mitigated_at
    # The last alert's endsAt when Alertmanager said so (the alerts' own clock), else when it was resolved.
    resolved = view.ended(now) if view.resolved else None
    lines = [f"# Postmortem draft: incident #{incident.id} {DASH} {incident.title}", "",
             "| | |", "|---|---|",
             f"| Severity | {view.severity}" + (f" (the alert said {incident.severity})"
                                                if view.severity != incident.severity else "") + " |",
             f"| Lead | {person(lifecycle.lead, MARKDOWN) if lifecycle.lead else DASH} |",
             f"| Started | {event_time(started, MARKDOWN)} (the first alert's startsAt) |",
             f"| Time to mitigate | {_since(started, mitigated)} |",
             f"| Time to resolve | {_since(started, resolved)}"
             + (f", resolved by {person(incident.resolved_by, MARKDOWN)}" if incident.resolved_by else "") + " |",
             f"| Where | {', '.join(incident.namespaces) or DASH} |", ""]
    lines += ["## Summary", "", _summary(events), "",
              "## What happened when", "", "| Time | Who | What |", "|---|---|---|"]
    lines += [f"| {event_time(e.at, MARKDOWN)} | {_cell(person(e.actor, MARKDOWN))} | "
              f"{_cell(describe_event(e, MARKDOWN))} |" for e in events if e.kind not in NOISE]
    lines += ["", "## Who approved what", ""]
    lines += [f"- {event_time(e.at, MARKDOWN)} {person(e.actor, MARKDOWN)}: {describe_event(e, MARKDOWN)}"
              for e in events if e.kind in DECISION_KINDS] or ["- Nothing was put to a vote."]
    lines += ["", "## What changed", ""]
    lines += [f"- {event_time(e.at, MARKDOWN)}: {describe_event(e, MARKDOWN)}"
              for e in events if e.kind in CHANGE_KINDS] or ["- meshbot changed nothing in the cluster."]
    lines += ["", "## Follow-ups", ""]
    lines += [f"- [ ] {free_text(f.text, MARKDOWN)} ({person(f.created_by, MARKDOWN)}, "
              f"{event_time(f.created_at, MARKDOWN)})" for f in follow_ups] or \
        ["- [ ] (none recorded: `/mesh incident followup ID TEXT`)"]
    lines += ["", "## For the people who were there", "",
              "- Why did it happen, beyond the probable cause meshbot found?",
              "- What made it worse or slower to fix?",
              "- What went well?", "",
              f"_Drafted by meshbot from the incident log on {event_time(now, MARKDOWN)}; "
              "`meshbot incidents verify` checks the events it was drafted from._", ""]
    return "\n".join(lines)


def _summary(events: Sequence[Event]) -> str:
    """The probable cause the diagnosis named and the status updates people wrote, in order."""
    parts = []
    for event in events:
        if event.kind == EventKind.DIAGNOSTICS_RUN and (event.data.get("triage") or []):
            parts.append(f"meshbot's probable cause: {free_text(event.data['triage'][0].get('title'), MARKDOWN)}.")
        elif event.kind == EventKind.STAGE_CHANGED:
            parts.append(f"{str(event.data.get('stage', '')).capitalize()}: {free_text(event.data.get('note'), MARKDOWN)}"
                         f" ({person(event.actor, MARKDOWN)}).")
    return " ".join(parts) or "(no probable cause or status update recorded)"


def _since(start: datetime, end: datetime | None) -> str:
    return human_duration((end - start).total_seconds()) if end else DASH


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
