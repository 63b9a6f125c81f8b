"""``/mesh incident …``: the incident log and its lifecycle from Slack (answers only the asker sees).

Reading, noting and the lifecycle (lead, status updates, severity, follow-ups) need DIAGNOSE; resolving by hand
needs RESOLVE.  The lifecycle's rules are ``bot.incidents.response``'s."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bot.incidents import headline
from bot.incidents.flow import IncidentFlow
from bot.incidents.lifecycle import SEVERITIES, LifecycleStore, Stage
from bot.incidents.postmortem import postmortem_markdown
from bot.incidents.records import Incident
from bot.incidents.report import NOISE, Style, describe_event, event_time, person
from bot.incidents.response import IncidentResponse
from bot.slack.app import Invocation
from bot.slack.blocks import escape, human_duration
from bot.slack.roles import Permission
from bot.slack.slash import PermissionWhen, SlashCommands, UsageError, expect_at_most
from commands.suggestions import did_you_mean

MAX_TIMELINE_EVENTS = 40
INCIDENT_USAGE = ("incident list | show ID | note ID TEXT | lead ID @someone | status ID investigating|fixing|"
                  "mitigated|monitoring NOTE | severity ID critical|error|warning|info | followup ID TEXT | "
                  "postmortem ID | resolve ID [NOTE]")
MAX_NOTE_LENGTH = 2000
_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")


class IncidentOp(StrEnum):
    LIST = "list"
    SHOW = "show"
    NOTE = "note"
    RESOLVE = "resolve"
    LEAD = "lead"
    STATUS = "status"
    SEVERITY = "severity"
    FOLLOWUP = "followup"
    POSTMORTEM = "postmortem"


@dataclass(frozen=True)
class IncidentRequest:
    op: IncidentOp
    incident_id: int | None = None
    text: str = ""
    value: str = ""
    """The lead (a user id when Slack escaped the mention), the stage or the severity."""


def incident_number(value: str) -> int:
    """``12`` or ``#12`` as typed by a person."""
    number = value.lstrip("#")
    if not (number.isascii() and number.isdigit()) or len(number) > 12:  # "²".isdigit() is True; int() refuses it
        raise UsageError(f"`{value[:20]}` is not an incident number. Usage: `/mesh {INCIDENT_USAGE}`")
    return int(number)


def _text_after(rest: str, words: int) -> str:
    """The raw text after the first ``words`` words (notes keep their spacing)."""
    parts = rest.split(None, words)
    text = parts[words].strip() if len(parts) > words else ""
    if len(text) > MAX_NOTE_LENGTH:
        raise UsageError(f"a note can be at most {MAX_NOTE_LENGTH} characters")
    return text


def parse_incident(words: list[str], rest: str) -> IncidentRequest:
    if not words:
        raise UsageError(f"which incident command? Usage: `/mesh {INCIDENT_USAGE}`")
    try:
        op = IncidentOp(words[0].lower())
    except ValueError:
        suggestion = did_you_mean(words[0][:20].lower(), [str(o) for o in IncidentOp])
        raise UsageError(f"unknown incident command `{words[0][:20]}`.{suggestion} Usage: `/mesh {INCIDENT_USAGE}`") \
            from None
    if op == IncidentOp.LIST:
        expect_at_most(words, 1, "incident list")
        return IncidentRequest(op)
    if len(words) < 2:
        raise UsageError(f"usage: `/mesh incident {op} ID …`")
    incident_id = incident_number(words[1])
    if op in (IncidentOp.SHOW, IncidentOp.POSTMORTEM):
        expect_at_most(words, 2, f"incident {op} ID")
        return IncidentRequest(op, incident_id)
    if op == IncidentOp.RESOLVE:
        return IncidentRequest(op, incident_id, _text_after(rest, 2))
    if op in (IncidentOp.NOTE, IncidentOp.FOLLOWUP):
        text = _text_after(rest, 2)
        if not text:
            raise UsageError(f"usage: `/mesh incident {op} ID TEXT`")
        return IncidentRequest(op, incident_id, text)
    if len(words) < 3:
        raise UsageError(f"usage: `/mesh {INCIDENT_USAGE}`")
    value = words[2]
    if op == IncidentOp.LEAD:
        mention = _MENTION.match(value)
        return IncidentRequest(op, incident_id, value=mention.group(1) if mention else value[:80])
    if op == IncidentOp.SEVERITY:
        if value.lower() not in SEVERITIES:
            raise UsageError(f"severity is one of {', '.join(SEVERITIES)}")
        return IncidentRequest(op, incident_id, value=value.lower())
    try:
        stage = Stage(value.lower())
    except ValueError:
        raise UsageError(f"a status is one of {', '.join(str(s) for s in Stage)} (resolving is "
                         f"`/mesh incident resolve {incident_id}`)") from None
    note = _text_after(rest, 3)
    if not note:
        raise UsageError(f"say what changed in a short note: `/mesh incident status {incident_id} {stage} NOTE`")
    return IncidentRequest(op, incident_id, note, value=str(stage))


def thread_link(incident: Incident, ts: str | None) -> str:
    if not incident.channel or not ts:
        return ""
    return f" \u00b7 <https://slack.com/archives/{incident.channel}/p{ts.replace('.', '')}|thread>"


@dataclass(frozen=True)
class IncidentCommands:
    flow: IncidentFlow
    response: IncidentResponse

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

    def _attach_postmortem(self, incident: Incident, now: datetime) -> str:
        """The Markdown draft (``meshbot incidents postmortem N``) as a file in the incident's thread, through the
        outbox: everyone in the conversation gets it, and a Slack outage delays it rather than losing it."""
        flow, lifecycle = self.flow, self.response.lifecycle
        if incident.top_message is None or not incident.channel:
            raise UsageError(f"incident #{incident.id} has no Slack thread; `meshbot incidents postmortem "
                             f"{incident.id}` prints the draft")
        draft = postmortem_markdown(incident, flow.incidents.alerts(incident.id), flow.incidents.timeline(incident.id),
                                    lifecycle.get(incident.id), lifecycle.follow_ups(incident.id), now)
        filename = f"incident-{incident.id}-postmortem.md"
        with flow.database.transaction() as db:
            flow.outbox.upload(db, incident_id=incident.id, channel=incident.channel, thread_of=incident.top_message,
                               filename=filename, title=f"Postmortem draft: incident #{incident.id}", content=draft)
        flow.outbox.wake()
        return f"The postmortem draft of incident #{incident.id} is attached in its thread (`{filename}`)."

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
        if request.incident_id is None:  # the parser names one for every command but list
            raise UsageError(f"which incident? Usage: `/mesh {INCIDENT_USAGE}`")
        incident = log.get(request.incident_id)
        if request.op == IncidentOp.SHOW:
            return self._timeline(incident, now)
        if request.op == IncidentOp.POSTMORTEM:
            return self._attach_postmortem(incident, now)
        if request.op == IncidentOp.NOTE:
            flow.note(incident.id, who.user, request.text)
            return f"Noted on incident #{incident.id}."
        response = self.response
        if request.op == IncidentOp.LEAD:
            return response.set_lead(incident.id, who.user, request.value)
        if request.op == IncidentOp.SEVERITY:
            return response.set_severity(incident.id, who.user, request.value)
        if request.op == IncidentOp.STATUS:
            return response.update_stage(incident.id, who.user, Stage(request.value), request.text)
        if request.op == IncidentOp.FOLLOWUP:
            return response.follow_up(incident.id, who.user, request.text)
        return response.resolve(incident.id, who.user, request.text)


def resolves(request: IncidentRequest) -> bool:
    """Resolving, and steering the response (lead, status, severity), need RESOLVE: the people who may close it."""
    return request.op in (IncidentOp.RESOLVE, IncidentOp.LEAD, IncidentOp.STATUS, IncidentOp.SEVERITY)


def register(commands: SlashCommands, flow: IncidentFlow) -> None:
    """``/mesh incident``: reading, notes and follow-ups need only DIAGNOSE; resolving by hand and steering the
    response need RESOLVE (MESHBOT_RESOLVE_BY).  It touches the database only, so it answers from the messenger
    pool."""
    response = IncidentResponse(flow, LifecycleStore(flow.database))
    commands.add("incident", usage=INCIDENT_USAGE, summary="open incidents, a timeline, notes, the lead, status "
                 "updates, severity, follow-ups, a postmortem draft (attached), resolve", parse=parse_incident,
                 handle=IncidentCommands(flow, response).handle,
                 permission=PermissionWhen(Permission.RESOLVE, resolves, "`incident resolve|lead|status|severity`"))
