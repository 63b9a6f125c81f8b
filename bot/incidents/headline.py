"""What an incident's top-level message shows, read back from the incident log, and the one way to refresh it.

The flow (alerts, diagnosis, resolve) and the approval desk (an executed action, a rollback) both change
what the top message must say; both call ``refresh_top`` so they never disagree.  Everything comes from
the database: the alerts' ``startsAt``/``endsAt``, the annotations recorded when the incident opened,
the triage stored with the diagnosis, and the actions executed and rolled back (events), so a restart
renders the same message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlite_utils

from bot.incidents import blocks, rollup
from bot.incidents.lifecycle import LifecycleStore
from bot.incidents.log import IncidentLog
from bot.incidents.records import DiagnosisRecord, Event, EventKind
from bot.slack.outbox import Outbox
from bot.timeline.summary import TimelineSummary
from commands.actions.targets import ActionName, ActionUsageError, Scope, parse_action


def headline_of(diagnosis: DiagnosisRecord | None, incident_id: int) -> blocks.Headline | None:
    """The first probable cause stored with a diagnosis, its first step a button when it is a suggested action."""
    if diagnosis is None or not diagnosis.triage:
        return None
    cause = diagnosis.triage[0]
    step = cause.get("first_step")
    first = None
    if step:
        action = step.get("action")
        actions = [s.get("action") for s in diagnosis.suggested]
        value = f"{incident_id}:{actions.index(action)}" if action and action in actions else None
        first = blocks.FirstStep(summary=step.get("summary", ""), action=action, command=step.get("command"),
                                 button_value=value)
    return blocks.Headline(key=cause["key"], title=cause["title"], explains=cause.get("explains", ""),
                           confidence=cause.get("confidence", ""), because=tuple(cause.get("because") or ()),
                           first_step=first, timing=cause.get("timing"))


def effect_of(action: str) -> str | None:
    """What an executed action leaves in place, in words; None when nothing lasts (a restart)."""
    try:
        target = parse_action(action.split())
    except ActionUsageError:
        return None
    if target.action == ActionName.PERMISSIVE_MTLS:
        return "the whole mesh accepts plaintext" if target.scope == Scope.MESH else \
            f"{target.namespace} accepts plaintext"
    if target.action == ActionName.BYPASS:
        return (f"namespace {target.namespace} runs outside the mesh" if target.scope == Scope.NAMESPACE
                else f"{target.namespace}/{target.name} runs without a sidecar")
    if target.action == ActionName.MEMORY and target.memory is not None:
        return f"{target.namespace}/{target.name or 'istiod'} runs with {target.memory.flags}"
    return None


EFFECT_WORDS = {"seen": "verified by its effect", "partly seen": "effect only partly seen",
                "not seen": "effect NOT seen", "not measured": "effect not measured"}


def effect_seen(events: Sequence[Event], request_id: int) -> str:
    """The latest verification by effect of an executed request, in words (the follow-up once it ran)."""
    looks = [effect for e in events if e.kind == EventKind.ACTION_VERIFIED
             and e.data.get("request_id") == request_id and (effect := e.data.get("effect"))]
    if not looks:
        return ""
    latest = looks[-1]
    first = (latest.get("lines") or [""])[0]
    return f"{EFFECT_WORDS.get(latest.get('outcome'), 'effect')}" + (f": {first}" if first else "")


def in_effect(events: Sequence[Event]) -> tuple[blocks.InEffect, ...]:
    """Executed actions whose change is still in place: executed, lasting, and not rolled back since."""
    rollback_of = {e.data.get("request_id"): e.data.get("rollback_of") for e in events
                   if e.kind == EventKind.APPROVAL_REQUESTED and e.data.get("rollback_of") is not None}
    executed = [e for e in events if e.kind == EventKind.ACTION_EXECUTED and e.data.get("ok", True)]
    undone = {rollback_of[e.data.get("request_id")] for e in executed if e.data.get("request_id") in rollback_of}
    effects = []
    for event in executed:
        request_id = event.data.get("request_id")
        what = effect_of(str(event.data.get("action", "")))
        if request_id is None or request_id in rollback_of or request_id in undone or what is None:
            continue
        effects.append(blocks.InEffect(what=what, since=event.at, request_id=int(request_id),
                                       effect=effect_seen(events, int(request_id))))
    return tuple(effects)


def top_view(db: sqlite_utils.Database, incidents: IncidentLog, outbox: Outbox, incident_id: int) -> blocks.TopView:
    incident = incidents.get_in(db, incident_id)
    alerts = incidents.alerts(incident_id, db)
    events = incidents.timeline(incident_id, db)
    opened = next((e for e in events if e.kind == EventKind.INCIDENT_OPENED), None)
    opened_data = opened.data if opened else {}
    diagnosis = incidents.latest_diagnosis(incident_id, db)
    joined = None
    if diagnosis and diagnosis.joined:
        target = incidents.get_in(db, diagnosis.joined)
        joined = blocks.JoinedTo(incident_id=target.id, cause=diagnosis.joined_cause,
                                 thread_url=thread_url(outbox, target.channel, target.top_message))
    manual = incident.source == "slack"
    sharing = incidents.sharing_top(db, incident.top_message) if incident.top_message is not None else []
    joined_here = tuple(i for i in sharing[1:] if sharing[0] == incident_id
                        and (d := incidents.latest_diagnosis(i, db)) is not None and d.joined == incident_id)
    return blocks.TopView(
        joined_here=joined_here,
        incident=incident, alerts=alerts, runbook_url=str(opened_data.get("runbook_url") or ""),
        description=str(opened_data.get("description") or ""), headline=headline_of(diagnosis, incident_id),
        diagnosed=incident.diagnosed, joined=joined, in_effect=in_effect(events),
        opened_by=opened.actor if opened else None,
        requested_action=str(opened_data.get("reason", "")).removeprefix("/mesh ") if manual else None,
        timeline=TimelineSummary.from_data(diagnosis.timeline) if diagnosis and diagnosis.timeline else None,
        lifecycle=LifecycleStore(incidents.database).get(incident_id, db))


def thread_url(outbox: Outbox, channel: str | None, entry: int | None) -> str | None:
    """A link to a top-level message once Slack has given it a ts (the outbox may not have sent it yet)."""
    ts = outbox.ts_of(entry) if entry is not None else None
    if not channel or not ts:
        return None
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def refresh_top(db: sqlite_utils.Database, incidents: IncidentLog, outbox: Outbox, incident_id: int,
                now: datetime) -> blocks.TopView:
    """Queue an update of the incident's top message to what the log says now; returns what it shows."""
    view = top_view(db, incidents, outbox, incident_id)
    top = view.incident.top_message
    if top is not None and view.incident.channel and rollup.is_rollup(db, incidents, top):
        # Listed in a roll-up (an alert storm): the message lists every incident in it, none owns it.
        rollup.refresh(db, incidents, outbox, top, view.incident.channel)
        return view
    first = incidents.sharing_top(db, top)[0] if top is not None else incident_id
    if first != incident_id:
        # It is part of another incident's conversation (bot.incidents.conversation): that top message is not its
        # own to rewrite, but it counts the groups that joined, so it is refreshed instead.
        refresh_top(db, incidents, outbox, first, now)
        return view
    if view.incident.top_message is not None and view.incident.channel:
        outbox.update(db, incident_id=incident_id, channel=view.incident.channel,
                      message=blocks.incident_message(view, now), of=view.incident.top_message)
    return view
