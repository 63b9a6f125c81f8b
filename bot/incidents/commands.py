"""``/mesh incident list|show|note|resolve``: the incident log from Slack (answers only the asker sees)."""

from __future__ import annotations

from datetime import datetime, timezone

from bot.slack.app import Invocation, Services, handles
from bot.slack.blocks import escape
from bot.incidents.report import describe_event
from bot.incidents.log import Incident
from bot.slack.slash import IncidentRequest
from commands.errors import UserError

MAX_TIMELINE_EVENTS = 40


def thread_link(incident: Incident, ts: str | None) -> str:
    if not incident.channel or not ts:
        return ""
    return f" \u00b7 <https://slack.com/archives/{incident.channel}/p{ts.replace('.', '')}|thread>"


@handles(IncidentRequest)
def handle_incident(services: Services, who: Invocation, request: IncidentRequest) -> None:
    flow = services.incident_flow
    if flow is None:
        who.tell("The incident log is not enabled on this meshbot.")
        return
    try:
        who.tell(_answer(services, who, request))
    except UserError as exc:
        who.tell(f":warning: {exc}")


def _answer(services: Services, who: Invocation, request: IncidentRequest) -> str:
    flow = services.incident_flow
    log = flow.incidents
    now = datetime.now(timezone.utc)
    if request.op == "list":
        incidents = log.list_open()
        if not incidents:
            return "No open incidents. :tada:"
        lines = [f"*Open incidents ({len(incidents)}):*"]
        for incident in incidents:
            ts = flow.outbox.ts_of(incident.top_message) if incident.top_message else None
            lines.append(f"\u2022 *#{incident.id}* [{incident.severity}] {escape(incident.title)} \u2014 open "
                         f"{incident.duration(now)}{thread_link(incident, ts)}")
        return "\n".join(lines)
    incident = log.get(request.incident_id)
    if request.op == "show":
        events = log.timeline(incident.id)
        lines = [f"*Incident #{incident.id}* [{incident.severity}] {escape(incident.title)} \u2014 "
                 f"{incident.status}, {incident.duration(now)}"]
        shown = events[-MAX_TIMELINE_EVENTS:]
        if len(events) > len(shown):
            lines.append(f"_\u2026{len(events) - len(shown)} earlier events; `meshbot incidents export "
                         f"{incident.id}` has them all_")
        lines += [f"`{e.at:%H:%M:%S}` {escape(e.actor)}: {escape(describe_event(e))}" for e in shown]
        return "\n".join(lines)[:3900]
    if request.op == "note":
        flow.note(incident.id, who.user, request.text)
        return f"Noted on incident #{incident.id}."
    if flow.resolve(incident.id, who.user):
        return f"Incident #{incident.id} resolved."
    return f"Incident #{incident.id} was already resolved."
