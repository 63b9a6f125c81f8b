"""From Alertmanager notifications to incident threads: one incident and one thread per alert group.

The webhook handler only validates and stores the raw notification (fast, so
Alertmanager never times out and retries into duplicates); a single processor
thread applies stored notifications in arrival order, each in one
transaction.  Alerts are remembered by occurrence (fingerprint + startsAt), so
re-sent notifications, retries and restarts change nothing twice.
Diagnostics run on the worker pool (``bot.incidents.diagnosis``); an incident
not yet diagnosed when the bot stopped is diagnosed when it starts again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlite_utils

from bot.diagnosis import Diagnostician
from bot.incidents import blocks, conversation, headline, rollup
from bot.incidents.alerts import (
    Alert,
    AlertStatus,
    Notification,
    as_ended,
    ended_alerts,
    ended_before,
    parse_notification,
)
from bot.incidents.diagnosis import MESHBOT, IncidentDiagnosis, SuggestionRenderer
from bot.incidents.log import IncidentLog
from bot.incidents.notifications import NO_INCIDENT, SET_ASIDE, NotificationLog, NotificationWriter
from bot.incidents.playbooks import PlaybookSet
from bot.incidents.records import EventKind, Incident, iso, utcnow
from bot.runtime.loops import WakeableLoop
from bot.runtime.metrics import Metrics
from bot.slack.blocks import Message
from bot.slack.outbox import Outbox
from bot.storage.database import Database
from bot.storage.dialect import Dialect, Lock, lock_key, try_lock_key
from bot.storage.intake import INTAKE_CHECKPOINT_SECONDS
from bot.timeline.reader import TimelineReader
from commands.errors import UserError

log = logging.getLogger(__name__)

PROCESS_EVERY = 5.0
ORPHANED_DIAGNOSIS_SECONDS = 10.0
"""An incident undiagnosed this long after a replica first saw it is diagnosed by that replica (its opener died)."""
TOP_REFRESH_SECONDS = 300.0
ALERTMANAGER = "alertmanager"

def alert_links(notification: Notification) -> dict[str, str]:
    """The group's ``runbook_url`` and ``description`` annotations (common ones first, else the first firing
    alert's), recorded when the incident opens so its top message can show them."""
    firing = notification.firing()
    first = dict(firing[0].annotations) if firing else {}
    links = {}
    for name in ("runbook_url", "description"):
        value = notification.common_annotations.get(name) or first.get(name)
        if value:
            links[name] = value[:2000]
    return links


@dataclass
class IncidentFlow:
    database: Database
    incidents: IncidentLog
    outbox: Outbox
    playbooks: PlaybookSet
    diagnostician: Diagnostician
    workers: ThreadPoolExecutor
    channel: str | None
    metrics: Metrics | None = None
    render_suggestions: SuggestionRenderer = field(
        default=lambda incident, suggestions: blocks.suggestions_blocks(suggestions))
    clock: Callable[[], datetime] = field(default=utcnow)
    timeline: TimelineReader | None = None
    """The timeline each diagnosis reads around its alert (docs/timeline.md); None: snapshots only."""
    rollup_per_minute: int = rollup.DEFAULT_PER_MINUTE  # new top-level posts a minute; further ones: a roll-up
    intake: Database | None = None
    """Where webhooks store notifications (``bot.storage.intake``: a file of its own beside SQLite); None: ``database``."""
    diagnosis: IncidentDiagnosis = field(init=False)
    notifications: NotificationLog = field(init=False)
    _loop: WakeableLoop = field(init=False)
    _writer: NotificationWriter = field(init=False)
    _processing: threading.Lock = field(default_factory=threading.Lock)
    _top_refreshed: dict[int, float] = field(default_factory=dict)
    """When each open incident's top message was last re-rendered only to advance its elapsed time."""
    _undiagnosed_since: dict[int, float] = field(default_factory=dict)
    """Since when (monotonic) this replica has seen each incident undiagnosed (PostgreSQL only)."""

    # -- intake (HTTP thread) ----------------------------------------------------------

    def accept(self, body: bytes) -> int:
        """Validate and store a webhook body; PayloadError (nothing stored) when it is not valid."""
        notification = parse_notification(body)
        notification_id = self._writer.store(iso(self.clock()), notification.group_key, str(notification.status),
                                             body.decode())
        self.wake()
        return notification_id

    # -- the processor thread --------------------------------------------------------------

    def __post_init__(self) -> None:
        self._loop = WakeableLoop("incidents", self._process_pass, idle=PROCESS_EVERY)
        self.notifications = NotificationLog(self.intake or self.database, self.database, self.clock)
        self._writer = NotificationWriter(self.notifications)
        self.diagnosis = IncidentDiagnosis(
            database=self.database, incidents=self.incidents, outbox=self.outbox, playbooks=self.playbooks,
            diagnostician=self.diagnostician, workers=self.workers, metrics=self.metrics,
            render_suggestions=self.render_suggestions, clock=self.clock, timeline=self.timeline)

    def wake(self) -> None:
        self._loop.wake()

    def start(self) -> IncidentFlow:
        # Read before the processor starts: an incident it opens now is diagnosed by it, not a second time here.
        undiagnosed = self.incidents.undiagnosed()
        self._loop.start()
        for incident in undiagnosed:
            self.diagnosis.submit(incident.id)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._loop.stop(timeout)

    def _process_pass(self) -> float:
        self.process_pending()
        if self.notifications.intake.background_checkpoints:
            self.notifications.intake.checkpoint_if_due(INTAKE_CHECKPOINT_SECONDS)
        self.refresh_open_tops()
        self.adopt_orphaned_diagnoses()
        return PROCESS_EVERY  # also without a wake-up, so nothing stored waits longer than this

    def adopt_orphaned_diagnoses(self) -> int:
        """With several replicas: diagnose incidents another replica opened but died before diagnosing (seen
        undiagnosed for ORPHANED_DIAGNOSIS_SECONDS; the diagnosis lock skips one still being run)."""
        if self.database.dialect == Dialect.SQLITE:
            return 0  # one process: start() diagnoses what its predecessor left
        now = time.monotonic()
        waiting = {incident.id for incident in self.incidents.undiagnosed()}
        self._undiagnosed_since = {i: self._undiagnosed_since.get(i, now) for i in waiting}
        due = [i for i, since in self._undiagnosed_since.items() if now - since >= ORPHANED_DIAGNOSIS_SECONDS]
        for incident_id in due:
            self._undiagnosed_since[incident_id] = now  # tried again at most once per interval
            self.diagnosis.submit(incident_id)
        return len(due)

    def refresh_open_tops(self, every: float = TOP_REFRESH_SECONDS) -> int:
        """Keep "firing since … (1h 12m)" current: re-render open incidents' top messages every few minutes
        (Slack renders the time itself in each reader's zone; the elapsed time is ours to update)."""
        now = time.monotonic()
        open_ids = {i.id for i in self.incidents.list_open() if i.top_message is not None}
        self._top_refreshed = {i: t for i, t in self._top_refreshed.items() if i in open_ids}  # forget closed ones
        due = [i for i in sorted(open_ids) if now - self._top_refreshed.setdefault(i, now) >= every]
        if not due:
            return 0
        with self.database.transaction() as db:
            for incident_id in due:
                self._refresh_top(db, incident_id)
                self._top_refreshed[incident_id] = now
        self.outbox.wake()
        return len(due)

    def process_pending(self) -> int:
        """Apply every stored, unprocessed notification in arrival order; returns how many."""
        done = 0
        with self._processing:
            while True:
                pending = self.database.retrying(self.notifications.unprocessed,
                                                 what="reading the stored notifications")
                busy: set[str] = set()
                applied = 0
                for notification_id, body in pending:
                    applied += self._process_safely(notification_id, body, busy)
                done += applied
                if not applied:  # nothing pending, or only groups another replica is applying: the next pass
                    return done

    def _process_safely(self, notification_id: int, body: str, busy: set[str]) -> bool:
        """One notification that cannot be applied must not hold up every one after it.  A transient database error
        (a lost connection, a restart, a lock timeout) is no reason to give up on it: retried with backoff, and if the
        database is still away it stays unprocessed for the next pass (it was answered 200: it must not be lost)."""
        try:
            return self.database.retrying(lambda: self._process_one(notification_id, body, busy),
                                          what=f"applying notification {notification_id}")
        except Exception as exc:
            if self.database.transient(exc):
                raise  # the processor's loop tries again after its pause; the notification stays unprocessed
            log.exception("notification %s could not be applied; set aside (kept, with the error)", notification_id)
            self._set_aside(notification_id, f"{type(exc).__name__}: {exc}"[:300])
            if self.metrics:
                self.metrics.notification_failed()
            return True

    def _set_aside(self, notification_id: int, reason: str) -> None:
        """Keep the notification, processed with its error, and say so in the incident channel through the outbox,
        once per alert group: alerts answered 200 and then in no incident must be seen, not only counted."""
        group_key = self.notifications.group_of(notification_id)
        with self.notifications.applying(notification_id) as step:
            db = step.db
            lock_key(db, Lock.GROUP, group_key)  # the group's first set-aside is told once, by one replica
            if self.channel and self.notifications.set_aside_in_group(db, group_key) == 0:
                self.outbox.post(db, incident_id=None, channel=self.channel,
                                 message=blocks.set_aside_note(group_key, notification_id, reason))
            step.settle(f"{SET_ASIDE}{reason}")
        self.outbox.wake()

    def _process_one(self, notification_id: int, body: str, busy: set[str]) -> bool:
        """Apply one notification; False (left for the next pass) while another transaction holds its group."""
        notification = parse_notification(body.encode())
        if notification.group_key in busy:
            return False  # an earlier one of its group is waiting: the group's notifications stay in order
        to_diagnose: list[int] = []
        with self.notifications.applying(notification_id) as step:
            db = step.db
            # The group's lock, first: replicas apply one group's notifications one at a time (one open incident,
            # updates in order, each notification once) and other groups' meanwhile.  Not waited for: a replica
            # paused while applying this group must not stall this processor, and every group queued behind it.
            if not try_lock_key(db, Lock.GROUP, notification.group_key):
                busy.add(notification.group_key)
                return False
            if self.notifications.processed(db, notification_id):
                return True  # another replica on the same PostgreSQL applied it since this one read the queue
            incident_id = self._apply(db, notification, to_diagnose)
            step.settle(None if incident_id else NO_INCIDENT)
        self.outbox.wake()
        for incident_id in to_diagnose:
            self.diagnosis.submit(incident_id)
        return True

    # -- applying one notification (inside its transaction) --------------------------

    def _apply(self, db: sqlite_utils.Database, notification: Notification, to_diagnose: list[int]) -> int | None:
        incident = self.incidents.open_for_group(db, notification.group_key)
        if incident is None:
            return self._open(db, notification, to_diagnose)
        changed = False
        # When the whole group resolves, the one "Resolved" reply says it; a line per alert would repeat it.
        announce = notification.status != AlertStatus.RESOLVED
        for alert in notification.alerts:
            changed |= self._apply_alert(db, incident, alert, announce=announce)
        if notification.status == AlertStatus.RESOLVED:
            self._resolve(db, incident, ALERTMANAGER, "all alerts of the group resolved")
        elif changed:
            self._refresh_top(db, incident.id)
        return incident.id

    def _open(self, db: sqlite_utils.Database, notification: Notification, to_diagnose: list[int]) -> int | None:
        firing = notification.firing()
        if notification.status == AlertStatus.RESOLVED or not firing:
            return None
        # A firing that arrives after its group's resolve (Alertmanager retried it late) opens nothing.
        ended = ended_alerts(self.notifications.resolutions_without_incident(db, notification.group_key))
        firing = [a for a in firing if not ended_before(a, ended)]
        if not firing:
            return None
        occurrences = [a.occurrence for a in firing]
        # Only this group's resolved incidents count: with `continue: true` another open group holds the same
        # occurrence, and it belongs in both incidents.
        seen = {a for a in occurrences if self.incidents.resolved_with_occurrence(db, notification.group_key, a)}
        if seen.issuperset(occurrences):
            # These firings belong to an incident that is resolved.  Alertmanager re-sends a firing group at its
            # repeat_interval, so one resolved by a person while the alert still fires comes back here: reopen it,
            # or a hand resolve would silence the alert for good.  One Alertmanager closed stays closed.
            return self._reopen_if_resolved_by_hand(db, notification.group_key, occurrences)
        if not self.channel:
            raise UserError("MESHBOT_CHANNEL is not set, so incidents cannot be posted")
        labels = notification.labels_for_playbook
        playbook = self.playbooks.match(labels)
        incident_id = self.incidents.create(
            db, group_key=notification.group_key, title=notification.title, severity=notification.severity,
            channel=self.channel, labels=labels, namespaces=notification.namespaces, services=notification.services,
            external_url=notification.external_url, playbook=playbook.name)
        self.incidents.append(db, incident_id, ALERTMANAGER, EventKind.INCIDENT_OPENED, {
            "group_key": notification.group_key, "receiver": notification.receiver, "severity": notification.severity,
            "group_labels": dict(notification.group_labels), "playbook": playbook.name,
            **alert_links(notification)})
        for alert in notification.alerts:
            self._record_alert(db, incident_id, as_ended(alert, ended))
        home = conversation.waiting_room(db, self.incidents, self.channel, notification.namespaces, incident_id)
        if home is not None:
            # One top-level post per outage: it waits in the open incident's thread until its diagnosis decides.
            conversation.wait_in(db, self.incidents, self.outbox, incident_id, home)
        elif not rollup.roll_up_if_beyond(db, self.incidents, self.outbox, incident_id, self.rollup_per_minute):
            top = self.outbox.post(db, incident_id=incident_id, channel=self.channel,
                                   message=blocks.incident_message(
                                       headline.top_view(db, self.incidents, self.outbox, incident_id), self.clock()))
            self.incidents.set_top_message(db, incident_id, top)
        to_diagnose.append(incident_id)
        if self.metrics:
            self.metrics.requests.labels(kind="incident_opened").inc()
        return incident_id

    def _reopen_if_resolved_by_hand(self, db: sqlite_utils.Database, group_key: str,
                                    occurrences: list[str]) -> int | None:
        rows = [self.incidents.resolved_while_firing(db, group_key, occurrence) for occurrence in occurrences]
        row = max((r for r in rows if r is not None), default=None)
        if row is None:
            return None
        incident_id, resolved_by = row
        if resolved_by is None or resolved_by in (ALERTMANAGER, MESHBOT):
            return None
        if not self.incidents.reopen(db, incident_id, ALERTMANAGER,
                                     f"its alert is still firing after <@{resolved_by}> resolved it"):
            return None
        view = self._refresh_top(db, incident_id)
        self._thread_post(db, view.incident, blocks.incident_reopened_note(resolved_by))
        return incident_id

    def _apply_alert(self, db: sqlite_utils.Database, incident: Incident, alert: Alert, *,
                     announce: bool = True) -> bool:
        """Record one alert of a re-sent or follow-up notification; True when the incident changed."""
        stored = self.incidents.alert(db, incident.id, alert.occurrence)
        if stored is None:
            self._record_alert(db, incident.id, alert)
            if alert.status == AlertStatus.FIRING:
                self.outbox.post_alert_update(db, incident_id=incident.id, channel=incident.thread_channel(),
                                              message=blocks.alert_line(self._alert_row(db, incident.id, alert)),
                                              thread_of=incident.top_message, namespace=alert.namespace,
                                              resolved=False)
            return True
        if stored["status"] == "firing" and alert.status == AlertStatus.RESOLVED:
            self.incidents.end_alert(db, incident.id, alert.occurrence, alert.ends_at or self.clock())
            self.incidents.append(db, incident.id, ALERTMANAGER, EventKind.ALERT_RESOLVED,
                                  {"alertname": alert.name, "fingerprint": alert.fingerprint,
                                   "ends_at": iso(alert.ends_at)})
            if announce:
                self.outbox.post_alert_update(db, incident_id=incident.id, channel=incident.thread_channel(),
                                              message=blocks.alert_line(self._alert_row(db, incident.id, alert),
                                                                        resolved=True),
                                              thread_of=incident.top_message, namespace=alert.namespace,
                                              resolved=True)
            return True
        return False

    def _record_alert(self, db: sqlite_utils.Database, incident_id: int, alert: Alert) -> None:
        self.incidents.add_alert(db, incident_id, alert)
        kind = EventKind.ALERT_RECEIVED if alert.status == AlertStatus.FIRING else EventKind.ALERT_RESOLVED
        self.incidents.append(db, incident_id, ALERTMANAGER, kind, {
            "alertname": alert.name, "fingerprint": alert.fingerprint, "status": str(alert.status),
            "starts_at": iso(alert.starts_at), "labels": dict(alert.labels), "summary": alert.summary,
            "generator_url": alert.generator_url})

    def _alert_row(self, db: sqlite_utils.Database, incident_id: int, alert: Alert) -> dict[str, Any]:
        row = self.incidents.alert(db, incident_id, alert.occurrence)
        if row is None:  # read back right after the alert was recorded, in the same transaction
            raise RuntimeError(f"incident #{incident_id} has no alert {alert.occurrence}")
        return row

    def _thread_post(self, db: sqlite_utils.Database, incident: Incident, message: Message) -> int:
        return self.outbox.post(db, incident_id=incident.id, channel=incident.thread_channel(), message=message,
                                thread_of=incident.top_message)

    def _refresh_top(self, db: sqlite_utils.Database, incident_id: int) -> blocks.TopView:
        return headline.refresh_top(db, self.incidents, self.outbox, incident_id, self.clock())

    def _resolve(self, db: sqlite_utils.Database, incident: Incident, actor: str, reason: str) -> bool:
        """Close it: the top message loses its bold severity and says how long it lasted, and one thread reply
        says so (Slack notifies a thread's followers of replies, not of edits)."""
        if not self.incidents.close(db, incident.id, actor, reason):
            return False
        view = self._refresh_top(db, incident.id)
        note = blocks.incident_resolved_note(view, self.clock(), actor if actor not in (ALERTMANAGER,) else None)
        if view.joined is not None:
            # The conversation is in the joined incident's thread: say it there.
            self._thread_post(db, self.incidents.get_in(db, view.joined.incident_id), note)
        else:
            self._thread_post(db, view.incident, note)
            self._resolve_linked(db, view.incident)
        return True

    def _resolve_linked(self, db: sqlite_utils.Database, parent: Incident) -> list[int]:
        """Incidents that joined this one's outage (same probable cause) close with it, and the thread says which:
        #4-#7 must not stay open after #1 resolves (issue 27).  Closed by meshbot, so a late repeat of their
        alert does not reopen them (``_reopen_if_resolved_by_hand``)."""
        linked = [other for other in self.incidents.open_diagnosed_except(db, parent.id)
                  if (stored := self.incidents.latest_diagnosis(other.id, db)) and stored.joined == parent.id]
        closed = [other.id for other in linked
                  if self.incidents.close(db, other.id, MESHBOT, f"resolved with incident #{parent.id}, whose "
                                                                 "outage it was part of")]
        for incident_id in closed:
            self._refresh_top(db, incident_id)
        if closed:
            self._thread_post(db, parent, blocks.linked_resolved_note(parent.id, closed))
        return closed

    # -- incidents meshbot opens itself (an expired mesh root) -----------------------------

    def open_incident(self, *, group_key: str, title: str, severity: str, labels: dict[str, str],
                      namespaces: list[str], reason: str) -> int | None:
        """Open an incident with a thread and diagnostics, unless one is open for ``group_key``."""
        if not self.channel:
            log.warning("cannot open an incident for %r: MESHBOT_CHANNEL is not set", title)
            return None
        playbook = self.playbooks.match(labels)
        with self.database.transaction() as db:
            lock_key(db, Lock.GROUP, group_key)
            existing = self.incidents.open_for_group(db, group_key)
            if existing is not None:
                return existing.id
            incident_id = self.incidents.create(
                db, group_key=group_key, title=title, severity=severity, channel=self.channel, labels=labels,
                namespaces=namespaces, services=[], external_url="", playbook=playbook.name, source=MESHBOT)
            self.incidents.append(db, incident_id, MESHBOT, EventKind.INCIDENT_OPENED,
                                  {"group_key": group_key, "reason": reason, "playbook": playbook.name})
            top = self.outbox.post(db, incident_id=incident_id, channel=self.channel, message=blocks.incident_message(
                headline.top_view(db, self.incidents, self.outbox, incident_id), self.clock()))
            self.incidents.set_top_message(db, incident_id, top)
        self.outbox.wake()
        self.diagnosis.submit(incident_id)
        return incident_id

    # -- people (slash commands) ------------------------------------------------------

    def note(self, incident_id: int, user: str, text: str) -> None:
        incident = self.incidents.get(incident_id)
        with self.database.transaction() as db:
            self.incidents.append(db, incident.id, user, EventKind.NOTE, {"text": text})
            if incident.top_message:
                self._thread_post(db, incident, blocks.note_message(user, text))
        self.outbox.wake()

    def resolve(self, incident_id: int, user: str) -> bool:
        """Close an incident by hand; False when it was already resolved."""
        incident = self.incidents.get(incident_id)
        with self.database.transaction() as db:
            lock_key(db, Lock.GROUP, incident.group_key)
            done = self._resolve(db, incident, user, f"resolved by <@{user}> in Slack")
        self.outbox.wake()
        return done
