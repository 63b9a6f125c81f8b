"""What people do on an incident from Slack besides notes: lead, severity, status updates, follow-ups, resolve.

Every change is an event in the incident log (the postmortem draft reads them), a short reply in the
incident's thread (Slack notifies a thread's followers of replies, not of edits) and a refreshed top message
(its owner line).  Resolving while an alert still fires needs a note saying why: a one-keystroke green
"Resolved" over a down istiod is how an outage is forgotten (issue 27).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import sqlite_utils

from bot.incidents import headline
from bot.incidents.flow import IncidentFlow
from bot.incidents.lifecycle import SEVERITIES, Lifecycle, LifecycleStore, Stage
from bot.incidents.records import EventKind, Incident, IncidentStatus
from bot.slack.blocks import Message, context, escape, message_of, plain, section
from bot.storage.dialect import Lock, lock_key
from commands.errors import UserError

STAGE_EMOJI = {Stage.INVESTIGATING: ":mag:", Stage.FIXING: ":hammer_and_wrench:", Stage.MITIGATED: ":adhesive_bandage:",
               Stage.MONITORING: ":eyes:"}


@dataclass(frozen=True)
class IncidentResponse:
    flow: IncidentFlow
    lifecycle: LifecycleStore

    def set_lead(self, incident_id: int, user: str, lead: str) -> str:
        def change(now_lifecycle: Lifecycle) -> tuple[Lifecycle, dict, Message]:
            note = message_of(f"Incident lead: {plain(lead)} (set by <@{user}>)",
                              [context(f":bust_in_silhouette: *Lead:* {_who(lead)} (set by <@{user}>)")])
            return _with(now_lifecycle, lead=lead), {"lead": lead}, note
        self._change(incident_id, user, EventKind.LEAD_SET, change)
        return f"{_who(lead)} leads incident #{incident_id} now."

    def set_severity(self, incident_id: int, user: str, severity: str) -> str:
        if severity not in SEVERITIES:
            raise UserError(f"severity is one of {', '.join(SEVERITIES)}")

        def change(now_lifecycle: Lifecycle) -> tuple[Lifecycle, dict, Message]:
            note = message_of(f"Severity set to {severity} by <@{user}>",
                              [context(f":label: *Severity:* {severity} (set by <@{user}>)")])
            return _with(now_lifecycle, severity=severity), {"severity": severity}, note
        self._change(incident_id, user, EventKind.SEVERITY_CHANGED, change)
        return f"Incident #{incident_id} is {severity} now."

    def update_stage(self, incident_id: int, user: str, stage: Stage, note: str) -> str:
        now = self.flow.clock()

        def change(now_lifecycle: Lifecycle) -> tuple[Lifecycle, dict, Message]:
            mitigated = now_lifecycle.mitigated_at or (now if stage == Stage.MITIGATED else None)
            message = message_of(f"{stage.label}: {plain(note)} (<@{user}>)", [section(
                f"{STAGE_EMOJI[stage]} *{stage.label}* \u2014 {escape(note)} (<@{user}>)")])
            return (_with(now_lifecycle, stage=stage, stage_note=note, mitigated_at=mitigated),
                    {"stage": str(stage), "note": note}, message)
        self._change(incident_id, user, EventKind.STAGE_CHANGED, change)
        return f"Incident #{incident_id}: {stage.label}."

    def follow_up(self, incident_id: int, user: str, text: str) -> str:
        flow = self.flow
        incident = flow.incidents.get(incident_id)
        with flow.database.transaction() as db:
            self.lifecycle.add_follow_up(db, incident.id, text, user, flow.clock())
            flow.incidents.append(db, incident.id, user, EventKind.FOLLOW_UP, {"text": text})
            self._reply(db, incident, message_of(f"Follow-up from <@{user}>: {plain(text)}", [context(
                f":pushpin: *Follow-up* (<@{user}>): {escape(text)}")]))
        flow.outbox.wake()
        return f"Follow-up recorded on incident #{incident.id}; `meshbot incidents postmortem {incident.id}` lists it."

    def resolve(self, incident_id: int, user: str, note: str) -> str:
        """Resolve by hand; while an alert still fires only with a note saying why (the confirmation)."""
        flow = self.flow
        incident = flow.incidents.get(incident_id)
        if incident.status == IncidentStatus.RESOLVED:
            return f"Incident #{incident.id} was already resolved."
        firing = sorted({a["alertname"] for a in flow.incidents.alerts(incident.id) if a["status"] == "firing"})
        if firing and not note:
            return (f"{', '.join(firing)} is still firing, so incident #{incident.id} stays open. If it is over "
                    f"anyway (fixed, the alert lags), resolve it with a note saying so: "
                    f"`/mesh incident resolve {incident.id} NOTE`. Alertmanager's next repeat reopens it while the "
                    "alert fires.")
        if note:
            flow.note(incident.id, user, f"Resolution: {note}")
        flow.resolve(incident.id, user)
        return f"Incident #{incident.id} resolved." + (" Its alert still fires: Alertmanager's next repeat reopens "
                                                       "it." if firing else "")

    def _change(self, incident_id: int, user: str, kind: EventKind, change) -> None:
        flow = self.flow
        incident = flow.incidents.get(incident_id)
        if incident.status != IncidentStatus.OPEN:
            raise UserError(f"incident #{incident.id} is resolved; a follow-up (`/mesh incident followup "
                            f"{incident.id} TEXT`) is what is left to add")
        with flow.database.transaction() as db:
            lock_key(db, Lock.GROUP, incident.group_key)  # of two changes at once, the second builds on the first
            lifecycle, data, note = change(self.lifecycle.get(incident.id, db))
            self.lifecycle.save(db, incident.id, lifecycle, flow.clock())
            flow.incidents.append(db, incident.id, user, kind, data)
            self._reply(db, incident, note)
            headline.refresh_top(db, flow.incidents, flow.outbox, incident.id, flow.clock())
        flow.outbox.wake()

    def _reply(self, db: sqlite_utils.Database, incident: Incident, message: Message) -> None:
        if incident.top_message is not None and incident.channel:
            self.flow.outbox.post(db, incident_id=incident.id, channel=incident.channel, message=message,
                                  thread_of=incident.top_message)


def _with(lifecycle: Lifecycle, **changes: object) -> Lifecycle:
    return replace(lifecycle, **changes)  # type: ignore[arg-type]


def _who(lead: str) -> str:
    """A Slack user id as a mention; anything else (``@alice`` typed without Slack's escaping) as typed."""
    return f"<@{lead}>" if lead[:1] in ("U", "W") and lead.isalnum() else escape(lead)
