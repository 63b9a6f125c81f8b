"""Diagnosing an incident: run its playbook, triage the findings, and post the result — or join an outage.

A diagnosis is triaged: its probable cause and first step go in the top
message (``headline``) and the triage is the thread's first reply — unless an
open incident's triage names the same cause, in which case the group joins
that conversation instead.  Diagnostics run on the worker pool; what they
found is stored as a ``DiagnosisRecord`` with the incident's events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime

import sqlite_utils

from bot.diagnosis import Diagnostician, Queued, queued_text
from bot.incidents import blocks, conversation, headline, triage_reply
from bot.incidents.log import IncidentLog
from bot.incidents.playbooks import Playbook, PlaybookSet, SuggestedRemediation, suggest, with_first_step
from bot.incidents.records import DiagnosisRecord, EventKind, Incident, parse_time, utcnow
from bot.runtime.metrics import Metrics
from bot.slack.blocks import Message, cluster_unavailable
from bot.slack.outbox import Outbox
from bot.storage.database import Database
from bot.storage.dialect import Lock, lock_key
from bot.timeline import thread as timeline_thread
from bot.timeline.reader import TimelineReader
from bot.timeline.summary import TimelineSummary
from commands.coverage import coverage
from commands.findings import Finding, by_severity, count_by_level
from commands.report import diagnose_text, split_summary
from commands.resources.references import PodRef
from commands.telemetry.relate import rank_by_time
from commands.telemetry.timeline import Timeline
from commands.triage import Scoped, scoped, shared_cause, triage

log = logging.getLogger(__name__)

MAX_FINDINGS_IN_LOG = 200
MAX_CAUSES_IN_JOIN = 2
MESHBOT = "meshbot"
"""The actor of what meshbot does by itself (a diagnosis, an incident it opens)."""

SuggestionRenderer = Callable[[Incident, list[SuggestedRemediation]], list]
"""Turns suggestions into blocks; the approvals flow replaces the text version with buttons."""


@dataclass
class IncidentDiagnosis:
    database: Database
    incidents: IncidentLog
    outbox: Outbox
    playbooks: PlaybookSet
    diagnostician: Diagnostician
    workers: ThreadPoolExecutor
    metrics: Metrics | None = None
    render_suggestions: SuggestionRenderer = field(
        default=lambda incident, suggestions: blocks.suggestions_blocks(suggestions))
    clock: Callable[[], datetime] = field(default=utcnow)
    timeline: TimelineReader | None = None
    """Reads the onset, failing edges, changes and Events around the alert; None: diagnoses are snapshots only."""

    def submit(self, incident_id: int) -> None:
        """Diagnose on the worker pool once the diagnosis queue gives the incident its turn (at most
        MESHBOT_MAX_DIAGNOSES at once): an alert storm's incidents wait for it without holding a worker, and the
        playbook's steps run one after another in that one turn."""
        self.diagnostician.queue.submit(
            self.workers, lambda: self._diagnose_safely(incident_id, in_turn=True),
            refused=lambda: log.warning("meshbot is stopping: incident #%s is not diagnosed", incident_id),
            on_queued=self._queued_note(incident_id))

    def _diagnose_safely(self, incident_id: int, *, in_turn: bool = False) -> None:
        try:
            # With several replicas on PostgreSQL one at a time diagnoses an incident; a dead one's lock goes with
            # its connection.  (diagnose() posts once anyway; the lock saves the cluster a second run.)
            with self.database.exclusively(f"diagnose:{incident_id}") as alone:
                if alone:
                    self.diagnose(incident_id, in_turn=in_turn)
        except Exception:
            log.exception("diagnosing incident #%s failed", incident_id)

    def diagnose(self, incident_id: int, *, in_turn: bool = False) -> list[Finding]:
        """Run the incident's playbook; post its triage as the thread's first reply and the probable cause with
        the first step in the top message — or, when an open incident's triage names the same cause, join it.
        ``in_turn``: the caller holds a turn of the diagnosis queue (``submit``); else each step waits for one."""
        incident = self.incidents.get(incident_id)
        playbook = self.playbooks.get(incident.playbook or "") or self.playbooks.match(incident.labels)
        pending_timeline = self._start_timeline(incident)
        findings, errors, steps = self._run_playbook(playbook, incident.labels,
                                                     None if in_turn else self._queued_note(incident_id), in_turn)
        summaries, rest = split_summary(findings)
        result = triage(rest)
        timeline = self.timeline.finished(pending_timeline) if self.timeline and pending_timeline else None
        if timeline is not None and self.timeline is not None:
            # A change shortly before the onset on the failing edges breaks ties of equal impact (triage.ORDERING).
            result, _ = rank_by_time(result, timeline.telemetry.edges, timeline.changes,
                                     istio_namespace=self.timeline.settings.istio_namespace)
        view = scoped(result, incident.namespaces)
        view = Scoped(view.causes, (*summaries, *view.findings), view.elsewhere)
        # Fix causes, not symptoms: a finding another one explains (istiod not ready because it is OOMKilled)
        # suggests nothing of its own ("restart istiod" would OOM again); its cause's first step leads.
        explained = {id(f) for cause in result.causes for f in cause.explains}
        suggestions = with_first_step(view.top, suggest(
            playbook, [f for f in view.findings if id(f) not in explained], incident.labels))
        title = f"Triage \u00b7 incident #{incident.id} \u00b7 playbook {playbook.name}"
        extra = self.render_suggestions(incident, suggestions)
        seen = coverage(findings, scope=", ".join(incident.namespaces) or "all namespaces",
                        checks=tuple(dict.fromkeys(step["check"] for step in steps if not step["error"])))
        report, hidden = triage_reply.triage_report(title, view, extra_blocks=extra, seen=seen)
        record = DiagnosisRecord(
            playbook=playbook.name, steps=tuple(steps), errors=tuple(errors),
            counts={str(k): v for k, v in count_by_level(findings).items()},
            findings=tuple(f.to_dict() for f in by_severity(findings)[:MAX_FINDINGS_IN_LOG]),
            findings_total=len(findings), elsewhere=len(view.elsewhere),
            triage=tuple(c.to_dict() for c in view.causes),
            suggested=tuple({"title": s.title, "action": s.action, "codes": list(s.codes)} for s in suggestions),
            timeline=TimelineSummary.of(timeline).to_data() if timeline is not None else None)
        thread_timeline = self._timeline_post(incident, timeline, view)
        with self.database.transaction() as db:
            # Diagnoses are recorded one at a time, so of two incidents with one cause diagnosed at once on two
            # replicas the second sees the first and joins it (and an incident's second run sees its first).
            lock_key(db, Lock.OUTAGES, "joins")
            if self.incidents.get_in(db, incident.id).diagnosed:
                return findings  # another run (a restart's catch-up) posted them already
            same = self._same_outage(db, incident, view)
            if same is not None:
                target, cause = same
                record = replace(record, joined=target.id, joined_cause=cause)
            self.incidents.record_diagnosis(db, incident.id, MESHBOT, record)
            if same is not None:
                self._join(db, incident, same[0], same[1], view)
            else:
                # A group that waited in an open incident's thread is a problem of its own: its top post now.
                incident = conversation.settle_separate(db, self.incidents, self.outbox, incident, self.clock())
                self._post_triage(db, incident, report, errors, title, findings, upload=bool(hidden or view.elsewhere))
                if thread_timeline is not None and incident.channel and incident.top_message is not None:
                    timeline_thread.queue(db, self.outbox, thread_timeline, incident_id=incident.id,
                                          channel=incident.channel, thread_of=incident.top_message)
                headline.refresh_top(db, self.incidents, self.outbox, incident.id, self.clock())
        self.outbox.wake()
        if self.metrics:
            for finding in findings:
                self.metrics.findings_posted.labels(level=str(finding.level)).inc()
        return findings

    def _start_timeline(self, incident: Incident) -> Future[Timeline | None] | None:
        """The timeline around the incident's first alert's startsAt (when Alertmanager says the trouble began),
        or around its opening for an incident without alerts; read while the playbook runs."""
        if self.timeline is None:
            return None
        starts = [parse_time(str(a["starts_at"])) for a in self.incidents.alerts(incident.id) if a.get("starts_at")]
        at = min((s for s in starts if s is not None), default=incident.opened_at)
        return self.timeline.start(at=at, namespaces=incident.namespaces)

    def _timeline_post(self, incident: Incident, timeline: Timeline | None,
                       view: Scoped) -> timeline_thread.TimelinePost | None:
        """The thread's timeline (drawn before the transaction); nothing when no timeline was read."""
        if timeline is None or self.timeline is None or timeline.empty:
            return None
        return timeline_thread.prepare(timeline, title=f"Timeline \u00b7 incident #{incident.id}",
                                       basename=f"incident-{incident.id}-timeline", source=self.timeline.source,
                                       timing=view.top.timing if view.top else None)

    def _thread_post(self, db: sqlite_utils.Database, incident: Incident, message: Message) -> int:
        return self.outbox.post(db, incident_id=incident.id, channel=incident.thread_channel(), message=message,
                                thread_of=incident.top_message)

    def _post_triage(self, db: sqlite_utils.Database, incident: Incident, report: Message, errors: list[str],
                     title: str, findings: list[Finding], *, upload: bool) -> None:
        """The triage first (the reply people read), then what could not be checked, then the full report."""
        self._thread_post(db, incident, report)
        for error in errors:
            self._thread_post(db, incident, cluster_unavailable(error))
        if upload:
            self.outbox.upload(db, incident_id=incident.id, channel=incident.thread_channel(),
                               thread_of=incident.thread_top(), filename=f"incident-{incident.id}-findings.txt",
                               title=f"Full report: {title}", content=diagnose_text(findings, title=title))

    def _same_outage(self, db: sqlite_utils.Database, incident: Incident, view: Scoped) -> tuple[Incident, str] | None:
        """The oldest open, diagnosed incident whose triage shares this one's cause (``shared_cause``), and that
        cause's title; None when this alert group is a conversation of its own."""
        for other in self.incidents.open_diagnosed_except(db, incident.id):
            stored = self.incidents.latest_diagnosis(other.id, db) or DiagnosisRecord(playbook="")
            if stored.joined:
                continue  # join the conversation, not another pointer to it
            cause = shared_cause(view.causes, list(stored.triage))
            if cause is not None:
                return other, cause
        return None

    def _join(self, db: sqlite_utils.Database, incident: Incident, target: Incident, cause: str,
              view: Scoped) -> None:
        """One conversation per outage: a short post in the target's thread (the waiting note, when the group
        waited there); a group with a top message of its own sees it become a one-line pointer.  Causes this
        group found that the target's triage does not name (istiod OOMKilled next to the shared expired root)
        are independent problems: the post names them with their first step, so joining loses none."""
        waiting = conversation.waiting_note_of(db, self.incidents, incident) is not None
        own = None if waiting else headline.thread_url(self.outbox, incident.channel, incident.top_message)
        stored = self.incidents.latest_diagnosis(target.id, db)
        known = stored.cause_keys if stored else frozenset()
        others = [c for c in view.causes if c.key not in known and c.title != cause][:MAX_CAUSES_IN_JOIN]
        note = blocks.joined_note(incident, cause, own, others)
        # A group that waited in the thread has no post of its own: its waiting note becomes this note.
        if not conversation.settle_joined(db, self.incidents, self.outbox, incident, target, note):
            self._thread_post(db, target, note)
        # Its own pointer post, or (waiting) the target's top message, which counts the groups that joined it.
        headline.refresh_top(db, self.incidents, self.outbox, incident.id, self.clock())
        self.incidents.append(db, target.id, MESHBOT, EventKind.NOTE,
                              {"text": f"incident #{incident.id} ({incident.title}) joined: same probable cause, "
                                       f"{cause}"})

    def _queued_note(self, incident_id: int) -> Queued:
        """Says once in the incident's thread that its diagnosis waits for its turn (an alert storm's backlog)."""
        told: list[int] = []

        def tell(ahead: int) -> None:
            if told:
                return
            told.append(ahead)
            incident = self.incidents.get(incident_id)
            with self.database.transaction() as db:
                self._thread_post(db, incident, Message(text=queued_text(ahead)))
            self.outbox.wake()
        return tell

    def _run_playbook(self, playbook: Playbook, labels: Mapping[str, str], on_queued: Queued | None = None,
                      in_turn: bool = False) -> tuple[list[Finding], list[str], list[dict]]:
        findings: dict[tuple[str, str, str], Finding] = {}
        errors: list[str] = []
        steps: list[dict] = []
        for step in playbook.diagnostics:
            namespace = step.namespace_for(labels)
            pod = step.pod_for(labels)
            pods = (PodRef(namespace, pod),) if pod and namespace else ()
            result = self.diagnostician.run([step.check], namespace, pods, on_queued=on_queued, in_turn=in_turn)
            steps.append({"check": step.check, "namespace": namespace, "pod": pod, "seconds": round(result.seconds, 2),
                          "error": result.error})
            if self.metrics:
                self.metrics.diagnosis_seconds.labels(check=step.check).observe(result.seconds)
            if result.error:
                errors.append(f"{step.check}: {result.error}")
            for finding in result.findings:
                findings.setdefault((finding.code, finding.origin, finding.message), finding)
        # Steps run one check each, in the playbook's order; a diagnosis reads in the registry's report order.
        return by_severity(findings.values(), self.diagnostician.checks.report_order()), errors, steps
