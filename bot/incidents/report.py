"""A postmortem-ready export of one incident: Markdown for people, JSON for tools.  Pure rendering."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.incidents.log import Event, Incident, iso

DASH = "\u2014"


def describe_event(event: Event) -> str:
    """One line per event, for people: the facts that matter for that kind."""
    data = event.data
    details = {
        "incident_opened": lambda: f"incident opened by {data.get('receiver') or 'Alertmanager'} "
                                   f"(playbook {data.get('playbook')})",
        "alert_received": lambda: f"alert {data.get('alertname')} {data.get('status')}",
        "alert_resolved": lambda: f"alert {data.get('alertname')} resolved",
        "diagnostics_run": lambda: f"diagnostics ({data.get('playbook')}): {data.get('counts')}",
        "message_posted": lambda: f"posted to Slack (ts {data.get('ts')}): {data.get('text', '')[:80]}",
        "message_failed": lambda: f"Slack refused a message: {data.get('error')}",
        "note": lambda: f"note: {data.get('text', '')}",
        "state_changed": lambda: f"{data.get('from')} \u2192 {data.get('to')} ({data.get('reason')})",
        "approval_requested": lambda: f"asked for `{data.get('action')}` (request #{data.get('request_id')}, "
                                      f"plan {str(data.get('plan_hash'))[:12]}, dry run "
                                      f"{'passed' if (data.get('dry_run') or {}).get('ok') else 'failed'})",
        "approval_click": lambda: f"{data.get('vote')} on request #{data.get('request_id')}: "
                                  f"{'accepted' if data.get('accepted') else 'refused'} ({data.get('reason')})",
        "approval_state": lambda: f"request #{data.get('request_id')}: {data.get('from')} \u2192 {data.get('to')}",
        "action_executed": lambda: f"executed `{data.get('action')}` (request #{data.get('request_id')})",
        "action_failed": lambda: f"`{data.get('action')}` failed (request #{data.get('request_id')}): "
                                 f"{data.get('error')}",
        "action_verified": lambda: f"verify {'passed' if data.get('ok') else 'FAILED'} "
                                   f"(request #{data.get('request_id')})",
    }.get(event.kind, lambda: f"{event.kind}: {dict(data)}")
    return details()


def _describe(event: Event) -> str:
    data = event.data
    kind = event.kind
    if kind == "incident_opened":
        return f"Incident opened from Alertmanager group `{data.get('group_key')}` (playbook `{data.get('playbook')}`)"
    if kind in ("alert_received", "alert_resolved"):
        return f"Alert **{data.get('alertname')}** {data.get('status', 'resolved')}: {data.get('summary', '')}".rstrip(
            ": ")
    if kind == "diagnostics_run":
        counts = data.get("counts") or {}
        found = ", ".join(f"{v} {k.lower()}" for k, v in counts.items())
        return f"Diagnostics (playbook `{data.get('playbook')}`): {found or 'no findings'}"
    if kind == "message_posted":
        return f"Posted to Slack (ts `{data.get('ts')}`): {data.get('text', '')}"
    if kind == "message_failed":
        return f"Slack refused a message ({data.get('error')}): {data.get('text', '')}"
    if kind == "note":
        return f"Note: {data.get('text', '')}"
    if kind == "state_changed":
        return f"State {data.get('from')} \u2192 {data.get('to')}: {data.get('reason', '')}"
    if kind.startswith(("approval", "action")):
        return describe_event(event)
    return f"{kind}: {json.dumps(dict(data), sort_keys=True)[:300]}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(incident: Incident, alerts: Sequence[dict[str, Any]], events: Sequence[Event], now: datetime) -> str:
    lines = [f"# Incident #{incident.id}: {incident.title}", "",
             "| | |", "|---|---|",
             f"| Severity | {incident.severity} |",
             f"| Status | {incident.status} |",
             f"| Opened | {iso(incident.opened_at)} |",
             f"| Resolved | {iso(incident.resolved_at) or DASH}"
             + (f" by {incident.resolved_by}" if incident.resolved_by else "") + " |",
             f"| Duration | {incident.duration(now)} |",
             f"| Namespaces | {', '.join(incident.namespaces) or DASH} |",
             f"| Services | {', '.join(incident.services) or DASH} |",
             f"| Playbook | {incident.playbook or DASH} |",
             f"| Alertmanager group | `{incident.group_key}` |", ""]
    if alerts:
        lines += ["## Alerts", "", "| Alert | Status | Started | Ended | Summary |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(a['alertname'])} | {a['status']} | {a['starts_at']} | {a['ends_at'] or DASH} "
                  f"| {_cell(a.get('summary') or '')} |" for a in alerts]
        lines.append("")
    diagnostics = [e for e in events if e.kind == "diagnostics_run"]
    if diagnostics:
        lines += ["## Findings", ""]
        for event in diagnostics:
            for finding in event.data.get("findings", [])[:50]:
                fix = (finding.get("remediation") or {}).get("command")
                lines.append(f"- **{finding['level']}** `{finding['code']}` {finding['origin']}: {finding['message']}"
                             + (f" \u2014 fix: `{fix}`" if fix else ""))
            hidden = event.data.get("findings_total", 0) - min(len(event.data.get("findings", [])), 50)
            if hidden > 0:
                lines.append(f"- \u2026 {hidden} more (see the JSON export)")
        lines.append("")
    lines += ["## Timeline", "", "| Time (UTC) | Who | What |", "|---|---|---|"]
    lines += [f"| {iso(e.at)} | {_cell(e.actor)} | {_cell(_describe(e))} |" for e in events]
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
