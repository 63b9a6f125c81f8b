"""A postmortem-ready export of one incident: Markdown for people, JSON for tools.  Pure rendering."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from bot.incidents.blocks import TopView
from bot.incidents.records import DiagnosisRecord, Event, EventKind, Incident, iso, parse_time
from bot.slack.blocks import escape, plural

DASH = "\u2014"


class Style(StrEnum):
    """Where an event line goes: Slack mrkdwn (mentions that notify, times in the reader's zone) or Markdown."""

    SLACK = "slack"
    MARKDOWN = "markdown"


_MENTION = re.compile(r"<@([UW][A-Z0-9]{2,})>")
_ESCAPED_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]{2,})&gt;")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
NOISE = frozenset({"message_posted"})
"""Kinds ``/mesh incident show`` leaves out: every Slack post is in the export; in Slack they are the thread."""


def person(actor: str, style: Style) -> str:
    """A Slack user as a mention (``<@U…>``) in Slack, ``@U…`` in Markdown; meshbot and Alertmanager by name."""
    if _USER_ID.match(actor):
        return f"<@{actor}>" if style == Style.SLACK else f"@{actor}"
    return {"alertmanager": "Alertmanager", "meshbot": "meshbot"}.get(actor, actor)


def free_text(text: Any, style: Style) -> str:
    """Text from outside (notes, alert summaries, reasons): escaped for Slack, user mentions kept."""
    value = str(text or "")
    if style == Style.SLACK:
        return _ESCAPED_MENTION.sub(r"<@\1>", escape(value))
    return _MENTION.sub(r"@\1", value)


def counts_phrase(counts: Mapping[str, int]) -> str:
    """``2 errors, 1 warning`` (levels with nothing left out), ``no findings``."""
    words = {"error": "error", "warning": "warning", "info": "info"}
    parts = [plural(int(n), words.get(level.lower(), level.lower())) for level, n in counts.items() if n]
    return ", ".join(parts) or "no findings"


def describe_event(event: Event, style: Style = Style.SLACK) -> str:
    """One line per event, for people: what happened, in words, with the facts that matter for that kind."""
    data = event.data
    describe = _DESCRIBERS.get(event.kind)
    if describe is not None:
        return describe(data, style)
    # A kind this version does not know (a newer meshbot wrote it): its fields, readably.
    fields = "; ".join(f"{k.replace('_', ' ')}: {free_text(v, style)}" for k, v in sorted(data.items())
                       if isinstance(v, (str, int, float)))
    return f"{event.kind.replace('_', ' ')}" + (f" ({fields})" if fields else "")


def _opened(data: Mapping[str, Any], style: Style) -> str:
    if data.get("source") == "slack":
        return f"Incident opened for `{free_text(data.get('reason'), style)}`"
    if data.get("group_key"):
        where = "Alertmanager" + (f" (receiver {free_text(data['receiver'], style)})" if data.get("receiver") else "")
        return f"Incident opened from {where}, playbook `{free_text(data.get('playbook'), style)}`"
    return f"Incident opened by meshbot: {free_text(data.get('reason'), style)}"


def _alert(data: Mapping[str, Any], style: Style) -> str:
    name = free_text(data.get("alertname"), style)
    if data.get("status", "resolved") == "resolved":
        ended = data.get("ends_at")
        return f"Alert {name} resolved" + (f" (ended {_when(ended)})" if ended else "")
    since = f" since {_when(data['starts_at'])}" if data.get("starts_at") else ""
    summary = free_text(data.get("summary"), style)
    return f"Alert {name} firing{since}" + (f": {summary}" if summary and summary != name else "")


def _diagnosed(data: Mapping[str, Any], style: Style) -> str:
    diagnosis = DiagnosisRecord.from_data(data)
    line = f"Diagnosis (playbook `{free_text(diagnosis.playbook, style)}`): {counts_phrase(diagnosis.counts)}"
    if diagnosis.triage:
        line += f"; probable cause: {free_text(diagnosis.triage[0].get('title'), style)}"
    if diagnosis.joined:
        line += f"; joined incident #{diagnosis.joined} (same probable cause)"
    if diagnosis.errors:
        line += f"; {plural(len(diagnosis.errors), 'check')} could not run"
    return line


def _state(data: Mapping[str, Any], style: Style) -> str:
    reason = free_text(data.get("reason"), style)
    if data.get("to") == "resolved":
        return "Resolved" + (f": {reason}" if reason else "")
    return f"State {data.get('from')} \u2192 {data.get('to')}" + (f": {reason}" if reason else "")


def _requested(data: Mapping[str, Any], style: Style) -> str:
    dry = "passed" if (data.get("dry_run") or {}).get("ok") else "failed"
    what = "rollback" if data.get("rollback_of") else "action"
    return (f"Asked for the {what} `/mesh {free_text(data.get('action'), style)}` (request #{data.get('request_id')}, "
            f"needs {plural(int(data.get('required') or 0), 'approval')}; server-side dry run {dry})")


def _click(data: Mapping[str, Any], style: Style) -> str:
    vote = {"approve": "Approved", "reject": "Rejected"}.get(str(data.get("vote") or data.get("button")), "Pressed")
    target = f"request #{data['request_id']}" if data.get("request_id") else "an unknown request"
    if data.get("accepted"):
        return f"{vote} {target} ({free_text(data.get('reason'), style)})"
    return f"{vote} {target}: refused, {free_text(data.get('reason'), style)}"


def _executed(data: Mapping[str, Any], style: Style) -> str:
    approved = ", ".join(person(u, style) for u in data.get("approved_by") or [])
    return (f"Ran `/mesh {free_text(data.get('action'), style)}` (request #{data.get('request_id')})"
            + (f", approved by {approved}" if approved else ""))


_DESCRIBERS: dict[str, Callable[[Mapping[str, Any], Style], str]] = {
    "incident_opened": _opened,
    "alert_received": _alert,
    "alert_resolved": lambda d, s: _alert({**d, "status": "resolved"}, s),
    EventKind.DIAGNOSTICS_RUN: _diagnosed,
    "message_posted": lambda d, s: f"Posted in Slack: {free_text(d.get('text'), s)}",
    "message_failed": lambda d, s: f"Slack refused a message ({free_text(d.get('error'), s)}): "
                                   f"{free_text(d.get('text'), s)}",
    "note": lambda d, s: f"Note: {free_text(d.get('text'), s)}",
    "state_changed": _state,
    "reminder": lambda d, s: f"Certificate reminder ({free_text(d.get('slot'), s)})",
    "approval_requested": _requested,
    "approval_click": _click,
    "approval_state": lambda d, s: f"Request #{d.get('request_id')}: {d.get('from')} \u2192 {d.get('to')}",
    "action_executed": _executed,
    "action_failed": lambda d, s: f"`/mesh {free_text(d.get('action'), s)}` failed (request #{d.get('request_id')}): "
                                  f"{free_text(d.get('error'), s)}",
    "action_verified": lambda d, s: f"Verify {'passed' if d.get('ok') else 'FAILED'} (request #{d.get('request_id')})",
    "lead_set": lambda d, s: f"Lead: {person(str(d.get('lead')), s)}",
    "severity_changed": lambda d, s: f"Severity set to {free_text(d.get('severity'), s)}",
    "stage_changed": lambda d, s: f"{str(d.get('stage', '')).capitalize()}: {free_text(d.get('note'), s)}",
    "follow_up": lambda d, s: f"Follow-up: {free_text(d.get('text'), s)}",
}


def _when(value: Any) -> str:
    moment = parse_time(str(value)) if value else None
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else str(value)


def event_time(moment: datetime, style: Style) -> str:
    """Date, time and zone: in Slack, in each reader's own zone (UTC as the fallback)."""
    utc = f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    if style == Style.SLACK:
        return f"<!date^{int(moment.timestamp())}^{{date_num}} {{time_secs}}|{utc}>"
    return utc


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(incident: Incident, alerts: Sequence[dict[str, Any]], events: Sequence[Event], now: datetime) -> str:
    view = TopView(incident=incident, alerts=alerts)
    resolved_by = f" by {person(incident.resolved_by, Style.MARKDOWN)}" if incident.resolved_by else ""
    lines = [f"# Incident #{incident.id}: {incident.title}", "",
             "| | |", "|---|---|",
             f"| Severity | {incident.severity} |",
             f"| Status | {incident.status} |",
             f"| Firing since | {event_time(view.started, Style.MARKDOWN)} |",
             f"| Opened | {event_time(incident.opened_at, Style.MARKDOWN)} |",
             f"| Resolved | {event_time(incident.resolved_at, Style.MARKDOWN) if incident.resolved_at else DASH}"
             f"{resolved_by} |",
             f"| Duration | {view.lasted(now)} (from the first alert's startsAt) |",
             f"| Namespaces | {', '.join(incident.namespaces) or DASH} |",
             f"| Services | {', '.join(incident.services) or DASH} |",
             f"| Playbook | {incident.playbook or DASH} |",
             f"| Alertmanager group | `{incident.group_key}` |", ""]
    if alerts:
        lines += ["## Alerts", "", "| Alert | Status | Started | Ended | Summary |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(a['alertname'])} | {a['status']} | {_when(a['starts_at'])} | "
                  f"{_when(a['ends_at']) if a['ends_at'] else DASH} "
                  f"| {_cell(a.get('summary') or '')} |" for a in alerts]
        lines.append("")
    diagnoses = [DiagnosisRecord.from_data(e.data) for e in events if e.kind == EventKind.DIAGNOSTICS_RUN]
    if diagnoses:
        lines += ["## Findings", ""]
        for diagnosis in diagnoses:
            for finding in diagnosis.findings[:50]:
                fix = (finding.get("remediation") or {}).get("command")
                lines.append(f"- **{finding['level']}** `{finding['code']}` {finding['origin']}: {finding['message']}"
                             + (f" \u2014 fix: `{fix}`" if fix else ""))
            hidden = diagnosis.findings_total - min(len(diagnosis.findings), 50)
            if hidden > 0:
                lines.append(f"- \u2026 {hidden} more (see the JSON export)")
        lines.append("")
    lines += ["## Timeline", "", "| Time | Who | What |", "|---|---|---|"]
    lines += [f"| {event_time(e.at, Style.MARKDOWN)} | {_cell(person(e.actor, Style.MARKDOWN))} "
              f"| {_cell(describe_event(e, Style.MARKDOWN))} |" for e in events]
    lines += ["", f"_Exported by meshbot. Event hashes chain from #{events[0].id if events else 0}; "
                  "`meshbot incidents verify` checks them._", ""]
    return "\n".join(lines)


def to_json(incident: Incident, alerts: Sequence[dict[str, Any]], events: Sequence[Event]) -> str:
    data = {
        "incident": {
            "id": incident.id, "title": incident.title, "severity": incident.severity, "status": str(incident.status),
            "group_key": incident.group_key, "channel": incident.channel, "opened_at": iso(incident.opened_at),
            "resolved_at": iso(incident.resolved_at), "resolved_by": incident.resolved_by,
            "labels": dict(incident.labels), "namespaces": list(incident.namespaces),
            "services": list(incident.services), "playbook": incident.playbook,
        },
        "alerts": [{k: (json.loads(v) if k == "labels" else v) for k, v in a.items()} for a in alerts],
        "events": [e.to_dict() for e in events],
    }
    return json.dumps(data, indent=2, sort_keys=False) + "\n"
