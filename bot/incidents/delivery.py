"""What the incident log keeps of Slack delivery: the outbox's ``DeliveryRecord`` for incidents.

The outbox (bot.slack.outbox) knows nothing of incidents; built with an ``IncidentDeliveries`` it
tells the log each post it sent or gave up on, which becomes an event in the same transaction.  Around
each delivery pass the log anchors its chain: when incidents change state (resolved, reopened) the
chain's head is posted in their threads, and the head is published to the anchor stores when due.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import sqlite_utils

from bot.incidents.alerts import SEVERITY_ORDER
from bot.incidents.log import IncidentLog
from bot.incidents.records import EventKind, IncidentStatus
from bot.slack.blocks import context, message_of
from bot.slack.entries import Delivery
from bot.slack.outbox import Outbox
from bot.storage.dialect import Lock, lock_key


@dataclass
class IncidentDeliveries:
    """The incident log's side of the outbox: events for what was posted, audit anchors in threads."""

    incidents: IncidentLog
    audit_channel: str | None = None
    """Where the head is posted when incidents change state (MESHBOT_AUDIT_CHANNEL); None: not in Slack at all.
    Never in the incidents' own threads: a hash between humans' replies is noise to them (issue 27)."""
    _anchors_scanned: int = field(default=0, init=False)
    """Events up to here were looked at for state changes (the database keeps what was posted)."""

    def recorded(self, db: sqlite_utils.Database, delivery: Delivery) -> None:
        """A ``message_posted`` (or ``message_failed``) event for an incident's post; other posts leave none."""
        entry = delivery.entry
        if entry.incident_id is None:
            return
        if delivery.error is not None:
            self.incidents.append(db, entry.incident_id, "meshbot", EventKind.MESSAGE_FAILED,
                                  {"outbox_id": entry.id, "op": str(entry.op), "error": delivery.error,
                                   "text": delivery.text})
            return
        data = {"outbox_id": entry.id, "op": str(entry.op), "ts": delivery.ts, "thread_of": delivery.thread_of,
                "text": delivery.text}
        if delivery.batch:  # one event for the batch; the entries it stood for are named by their range
            data.update(batched=len(delivery.batch), last_outbox_id=delivery.batch[-1])
        self.incidents.append(db, entry.incident_id, "meshbot", EventKind.MESSAGE_POSTED, data)

    def severity_ranks(self, incident_ids: Collection[int]) -> Mapping[int, int]:
        """0 for critical, 1 for error … (SEVERITY_ORDER); an unknown severity after all of them."""
        order = {name: rank for rank, name in enumerate(SEVERITY_ORDER)}
        return {i: order.get(severity.lower(), len(order))
                for i, severity in self.incidents.severities(incident_ids).items()}

    def finished(self, incident_ids: Collection[int]) -> Collection[int]:
        """Resolved incidents: their resolve note goes out before other incidents' backlogs."""
        return {i for i, status in self.incidents.statuses(incident_ids).items() if status == IncidentStatus.RESOLVED}

    def before_pass(self, outbox: Outbox) -> None:
        """When incidents change state (resolved, reopened), post the log's head in the audit channel, naming them.

        Not when they open (the head is anchored in the file and the Lease then anyway), and never in the
        incidents' threads, which are for people."""
        marker = self.incidents.thread_anchored_until()
        if marker is None or self.audit_channel is None:
            return
        start = max(marker, self._anchors_scanned)
        newest = self.incidents.newest_event_id()
        changed = self.incidents.state_changes_between(start, newest)
        self._anchors_scanned = newest  # each pass reads only the events written since the last one
        if not changed:
            return
        with self.incidents.database.transaction() as db:
            lock_key(db, Lock.ANCHORS, "thread")  # the marker is read, then moved: one replica at a time
            if self.incidents.thread_anchored_until(db) != marker:
                return  # another replica posted these anchors meanwhile
            head = self.incidents.head(db)
            if head is None:  # state changes are events, so the log is not empty; kept for the type
                return
            which = ", ".join(f"#{i}" for i in changed)
            line = f"{head.line} \u00b7 incidents {which} changed state"
            outbox.post(db, incident_id=None, channel=self.audit_channel, message=message_of(line, [context(
                f":link: {line}")]))
            self.incidents.set_thread_anchored_until(db, head.event_id)

    def after_pass(self) -> None:
        """Publish the chain's head outside the database when it is due (the events of this pass are committed)."""
        self.incidents.anchor_if_due()
