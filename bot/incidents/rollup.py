"""Roll-up: beyond K new incidents a minute in one channel, further ones share one top-level message.

During an alert storm every new alert group used to get a top-level post of its own: 150 warning groups were 150
posts, the channel unreadable and Slack's one-post-a-second pacing spent on them while a critical alert waited.
Past ``MESHBOT_ROLLUP_PER_MINUTE`` incidents opened in a channel within the last minute (the incident log's clock),
a new incident gets no post of its own: the channel's current roll-up message lists it (a new roll-up when none
was started within the minute), kept up to date as more come and as their states change, and its thread is the
roll-up's thread (its triage and updates go there).  Each keeps its incident record, events and ``/mesh incident
show``.  A critical incident is never rolled up.  A roll-up is a top message whose first incident's log holds a
note naming it (``ROLLED_UP``): ``headline.refresh_top`` re-renders the list instead of one incident's message.
"""

from __future__ import annotations

from datetime import timedelta

import sqlite_utils

from bot.incidents.log import IncidentLog
from bot.incidents.records import EventKind, Incident
from bot.settings import DEFAULT_ROLLUP_PER_MINUTE
from bot.slack.blocks import Message, context, escape, message_of, plain, section
from bot.slack.outbox import Outbox

MESHBOT = "meshbot"
DEFAULT_PER_MINUTE = DEFAULT_ROLLUP_PER_MINUTE
ROLLED_UP = "rolled_up"
"""Key of the ``note`` event data naming the outbox entry of the roll-up an incident is listed in."""
WINDOW = timedelta(minutes=1)
NEVER_ROLLED_UP = frozenset({"critical"})
"""Severities that always get a top-level post of their own (and a place in the urgent lane)."""
MAX_LISTED = 40
"""Lines in one roll-up message (Slack's 3,000-character section); the rest are counted."""


def roll_up_if_beyond(db: sqlite_utils.Database, incidents: IncidentLog, outbox: Outbox, incident_id: int,
                      per_minute: int) -> bool:
    """Put a new incident in its channel's roll-up when it is beyond the limit (True); False: it gets its own
    top-level post (the caller posts it)."""
    incident = incidents.get_in(db, incident_id)
    channel = incident.thread_channel()
    if not beyond_limit(db, incidents, channel, incident.severity, per_minute, incident_id):
        return False
    roll_up(db, incidents, outbox, incident_id, channel)
    return True


def beyond_limit(db: sqlite_utils.Database, incidents: IncidentLog, channel: str, severity: str,
                 per_minute: int, incident_id: int) -> bool:
    """Whether a new incident of ``severity`` goes into ``channel``'s roll-up: ``per_minute`` others were opened
    there within the last minute, and it is not critical."""
    if severity in NEVER_ROLLED_UP:
        return False
    recent = incidents.opened_in_channel_since(db, channel, incidents.clock() - WINDOW)
    return sum(1 for i in recent if i.id != incident_id) >= per_minute


def roll_up(db: sqlite_utils.Database, incidents: IncidentLog, outbox: Outbox, incident_id: int,
            channel: str) -> int:
    """List the new incident in the channel's current roll-up (started now when there is none within the minute);
    its thread is the roll-up's from now on.  Returns the roll-up's outbox entry."""
    recent = incidents.opened_in_channel_since(db, channel, incidents.clock() - WINDOW)
    entry = next((i.top_message for i in reversed(recent) if i.id != incident_id and i.top_message is not None
                  and is_rollup(db, incidents, i.top_message)), None)
    posted = entry is None
    if entry is None:
        entry = outbox.post(db, incident_id=None, channel=channel,
                            message=rollup_message([incidents.get_in(db, incident_id)]))
    incidents.set_top_message(db, incident_id, entry)
    # The note naming the entry is what marks the top message a roll-up (``is_rollup``), for its first incident.
    incidents.append(db, incident_id, MESHBOT, EventKind.NOTE, {
        "text": "opened while more than the channel's limit of new incidents a minute were: listed in a roll-up "
                "message instead of a top-level post of its own", ROLLED_UP: entry})
    if not posted:
        refresh(db, incidents, outbox, entry, channel)
    return entry


def is_rollup(db: sqlite_utils.Database, incidents: IncidentLog, entry: int) -> bool:
    """Whether the top message ``entry`` is a roll-up (its first incident's log names it), not an incident's own."""
    sharing = incidents.sharing_top(db, entry)
    if not sharing:
        return False
    return any(e.kind == EventKind.NOTE and e.data.get(ROLLED_UP) == entry
               for e in incidents.timeline(sharing[0], db))


def refresh(db: sqlite_utils.Database, incidents: IncidentLog, outbox: Outbox, entry: int, channel: str) -> None:
    """Queue an update of the roll-up message to the incidents it lists now (their states included)."""
    listed = [incidents.get_in(db, i) for i in incidents.sharing_top(db, entry)]
    outbox.update(db, incident_id=None, channel=channel, message=rollup_message(listed), of=entry)


def rollup_message(listed: list[Incident]) -> Message:
    count = len(listed)
    noun = "incident" if count == 1 else "incidents"
    lines = [f"• #{i.id} {escape(i.severity or 'unknown')}: {escape(i.title)}"
             + ("" if i.status == "open" else f" ({escape(str(i.status))})") for i in listed[:MAX_LISTED]]
    if count > MAX_LISTED:
        lines.append(f"…and {count - MAX_LISTED} more (`/mesh incident list`)")
    return message_of(
        f"Roll-up: {count} more new {noun} — " + "; ".join(f"#{i.id} {plain(i.title)}" for i in listed[:10]),
        [section(f":package: *Roll-up: {count} more new {noun}* (beyond this channel's limit a minute; a "
                 "critical one always gets its own post)\n" + "\n".join(lines)),
         context("Each is a full incident: its triage and updates are in this thread; `/mesh incident show ID` "
                 "for one.")])
