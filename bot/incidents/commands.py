"""``/mesh incident list|show|note|resolve``: the incident log from Slack (answers only the asker sees)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bot.incidents.flow import IncidentFlow
from bot.incidents.records import Incident
from bot.incidents import headline
from bot.incidents.report import NOISE, Style, describe_event, event_time, person
from bot.slack.app import Invocation
from bot.slack.roles import Permission
from bot.slack.blocks import escape, human_duration
from bot.slack.slash import PermissionWhen, SlashCommands, UsageError, expect_at_most

MAX_TIMELINE_EVENTS = 40
INCIDENT_USAGE = "incident list | incident show ID | incident note ID TEXT | incident resolve ID"
MAX_NOTE_LENGTH = 2000


class IncidentOp(StrEnum):
    LIST = "list"
    SHOW = "show"
    NOTE = "note"
    RESOLVE = "resolve"


@dataclass(frozen=True)
class IncidentRequest:
    op: IncidentOp
    incident_id: int | None = None
    text: str = ""


def incident_number(value: str) -> int:
    """``12`` or ``#12`` as typed by a person."""
    number = value.lstrip("#")
    if not (number.isascii() and number.isdigit()) or len(number) > 12:  # "²".isdigit() is True; int() refuses it
        raise UsageError(f"`{value[:20]}` is not an incident number. Usage: `/mesh {INCIDENT_USAGE}`")
    return int(number)


def parse_incident(words: list[str], rest: str) -> IncidentRequest:
    if not words:
        raise UsageError(f"which incident command? Usage: `/mesh {INCIDENT_USAGE}`")
    try:
        op = IncidentOp(words[0].lower())
    except ValueError:
        raise UsageError(f"unknown incident command `{words[0][:20]}`. Usage: `/mesh {INCIDENT_USAGE}`") from None
    if op == IncidentOp.LIST:
        expect_at_most(words, 1, "incident list")
        return IncidentRequest(op)
    if op in (IncidentOp.SHOW, IncidentOp.RESOLVE):
        if len(words) != 2:
            raise UsageError(f"usage: `/mesh incident {op} ID`")
        return IncidentRequest(op, incident_number(words[1]))
    if len(words) < 3:
        raise UsageError("usage: `/mesh incident note ID TEXT`")
    incident_id = incident_number(words[1])
    text = rest.split(None, 2)[2].strip()
    if len(text) > MAX_NOTE_LENGTH:
        raise UsageError(f"a note can be at most {MAX_NOTE_LENGTH} characters")
    return IncidentRequest(op, incident_id, text)


def thread_link(incident: Incident, ts: str | None) -> str:
    if not incident.channel or not ts:
        return ""
    return f" \u00b7 <https://slack.com/archives/{incident.channel}/p{ts.replace('.', '')}|thread>"


@dataclass(frozen=True)
class IncidentCommands:
    flow: IncidentFlow

    def handle(self, who: Invocation, request: IncidentRequest) -> None:
        """An unknown incident number raises UserError, which the asker reads as a warning."""
        who.tell(self._answer(who, request))

    def _timeline(self, incident: Incident, now: datetime) -> str:
        """The incident and its events: date, time and zone, who (as a mention), what happened in words."""
        events = [e for e in self.flow.incidents.timeline(incident.id) if e.kind not in NOISE]
        view = headline.top_view(self.flow.database.db, self.flow.incidents, self.flow.outbox, incident.id)
        state = (f"resolved, lasted {view.lasted(now)}" if view.resolved
                 else f"open, firing for {human_duration((now - view.started).total_seconds())}")
        lines = [f"*Incident #{incident.id}* [{escape(incident.severity)}] {escape(incident.title)} \u2014 {state}"]
        shown = events[-MAX_TIMELINE_EVENTS:]
        if len(events) > len(shown):
            lines.append(f"_\u2026{len(events) - len(shown)} earlier events; `meshbot incidents export "
                         f"{incident.id}` has them all_")
        lines += [f"{event_time(e.at, Style.SLACK)} \u00b7 {person(e.actor, Style.SLACK)}: "
                  f"{describe_event(e, Style.SLACK)}" for e in shown]
        return "\n".join(lines)[:3900]

    def _answer(self, who: Invocation, request: IncidentRequest) -> str:
        flow = self.flow
        log = flow.incidents
        now = flow.clock()  # the incidents' own clock (a scenario's, in the demo)
        if request.op == IncidentOp.LIST:
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
        if request.op == IncidentOp.SHOW:
            return self._timeline(incident, now)
        if request.op == IncidentOp.NOTE:
            flow.note(incident.id, who.user, request.text)
            return f"Noted on incident #{incident.id}."
        if flow.resolve(incident.id, who.user):
            return (f"Incident #{incident.id} resolved. If its alert is still firing, Alertmanager's next repeat "
                    "reopens it.")
        return f"Incident #{incident.id} was already resolved."


def resolves(request: IncidentRequest) -> bool:
    return request.op == IncidentOp.RESOLVE


def register(commands: SlashCommands, flow: IncidentFlow) -> None:
    """``/mesh incident``: reading and noting need only DIAGNOSE; resolving by hand needs RESOLVE
    (MESHBOT_RESOLVE_BY).  It reads the database only, so it answers from the messenger pool."""
    commands.add("incident", usage=INCIDENT_USAGE, summary="open incidents, a timeline, add a note, resolve",
                 parse=parse_incident, handle=IncidentCommands(flow).handle,
                 permission=PermissionWhen(Permission.RESOLVE, resolves, "`incident resolve`"))
