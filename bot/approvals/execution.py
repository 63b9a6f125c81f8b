"""Executing approved requests: claim with a fencing token, heartbeat, run the stored plan, verify, record.

The desk (``bot.approvals.desk``) decides *that* a request runs (the approving click moves it to *executing*);
this module runs it.  One replica wins the conditional claim; its attempt number is the fencing token every
later write of the execution checks (``_fence``, and the outcome's own conditional update), so an executor
paused past its lease stops instead of re-applying a change someone has since rolled back.  A heartbeat renews
the lease on the database's clock; the desk's sweep resumes executions whose lease ran out
(``resume_abandoned``) and runs the follow-up look at executed requests (``run_follow_ups``).  What people see
(the request's card, the thread note, the incident's top message) is drawn by the desk through ``Announcer``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlite_utils

from bot.approvals import authority
from bot.approvals import blocks as approval_blocks
from bot.approvals.rule import RequestState
from bot.approvals.store import ApprovalRequest, ApprovalStore
from bot.approvals.verification import ExecutionChecks, follow_up_due
from bot.incidents import headline
from bot.incidents.log import IncidentLog
from bot.incidents.records import EventKind
from bot.slack.outbox import Outbox
from bot.storage.database import Database
from bot.storage.dialect import Dialect
from commands.actions import Outcome, apply, verify
from commands.clients.kube import KubeClient
from commands.errors import MeshbotError
from commands.times import rfc3339

log = logging.getLogger(__name__)

MESHBOT = "meshbot"
EXECUTION_LEASE = timedelta(seconds=15)
"""How long an execution claim lasts without a heartbeat (renewed every third of it) before a survivor resumes it."""
FOLLOW_UP_WINDOW = timedelta(days=1)
"""Executed requests older than this get no follow-up (a bot down for a day has more to say than that)."""


class Superseded(Exception):
    """This executor's claim is no longer the request's current one (fencing): it stops and writes nothing more."""


class Announcer(Protocol):
    """What an execution shows people, drawn by the desk that owns the request's card and thread."""

    def update_message(self, db: sqlite_utils.Database, request_id: int, now: datetime) -> ApprovalRequest: ...

    def thread_note(self, db: sqlite_utils.Database, request: ApprovalRequest) -> None: ...

    def settle_incident(self, db: sqlite_utils.Database, incident_id: int) -> None: ...


@dataclass
class Executions:
    """Runs approved requests on the approvals' own pool, each once across replicas (claim, fence, finish)."""

    database: Database
    incidents: IncidentLog
    outbox: Outbox
    store: ApprovalStore
    announce: Announcer
    required: int
    ttl: timedelta
    kube: Callable[[], KubeClient]
    clock: Callable[[], datetime]
    submit: Callable[..., Future[Any] | None]
    """Hands a call to the approvals' pool (never the diagnosis workers)."""
    effects: ExecutionChecks
    executor: str
    """This replica, as the executor of the requests it runs (with several replicas on PostgreSQL)."""
    lease: timedelta = EXECUTION_LEASE
    _running: set[int] = field(default_factory=set)
    """Requests being executed by this process: a click and the sweep's resume must not both run one."""
    _running_lock: threading.Lock = field(default_factory=threading.Lock)
    _claims: dict[int, int] = field(default_factory=dict)
    """Requests this process holds the execution claim of, with its fencing token (attempt): handed back on stop."""

    @property
    def lease_seconds(self) -> float:
        return self.lease.total_seconds()

    def schedule(self, request_id: int) -> None:
        """Run an approved request on the approvals' pool."""
        self.submit(self._execute_safely, request_id)

    def _execute_safely(self, request_id: int) -> None:
        try:
            self.execute(request_id)
        except Exception:
            # Before the claim (the database unreachable): nothing ran, and the request stays executing with no
            # live lease, so the sweeper's resume picks it up.  After it, ``_execute`` records the crash itself.
            log.exception("executing approval request #%s failed", request_id)

    def execute(self, request_id: int) -> ApprovalRequest:
        """Run an approved request's stored plan once, verify it, and record everything."""
        with self._running_lock:
            if request_id in self._running:
                return self._get(self.database.db, request_id)
            self._running.add(request_id)
        try:
            return self._execute(request_id)
        finally:
            with self._running_lock:
                self._running.discard(request_id)

    def _execute(self, request_id: int) -> ApprovalRequest:
        with self.database.transaction() as db:
            request = self._get(db, request_id)
            if request.state != RequestState.EXECUTING:
                return request
            # The conditional claim is what makes clicks on different replicas execute once: only one replica
            # becomes the executor while the one before it holds a lease (on the database's clock).  Its attempt
            # number is the fencing token every later write of this execution checks.
            attempt = self.store.claim_execution(db, request_id, self.executor, self.lease_seconds,
                                                 take_over_live=self.database.dialect == Dialect.SQLITE)
            if attempt is None:
                return request
            # The row's state, required count, expiry and vote rows are columns a database writer sets: the
            # authority to run (and to resume) is recomputed from the keyed log (bot.approvals.authority).
            refused = authority.refusal(db, self.incidents, request, self.required, self.ttl)
            if refused:
                authority.refuse(db, self.incidents, self.store, request, refused)
                return self._get(db, request_id)
        with self._running_lock:
            self._claims[request_id] = attempt
        stop = threading.Event()
        beating = threading.Thread(target=self._heartbeat, args=(request_id, attempt, stop),
                                   name=f"heartbeat-{request_id}", daemon=True)
        beating.start()
        try:
            outcome, checked, preconditions = self._run(request, attempt)
            # The change is made: recording it must outlast a transient database error (a lock timeout on the
            # audit chain while twenty executions finish at once, a failover), or it reads "failed" while applied.
            return self.database.retrying(
                lambda: self._finish(request, outcome, checked, preconditions, attempt=attempt),
                what=f"recording the outcome of approval request #{request_id}")
        except Superseded as exc:
            return self._superseded(request, attempt, str(exc))
        except Exception as exc:
            log.exception("executing approval request #%s failed", request_id)
            self._record_crash(request_id, exc, attempt)
            return self._get(self.database.db, request_id)
        finally:
            stop.set()
            beating.join()
            with self._running_lock:
                self._claims.pop(request_id, None)

    def _fence(self, request_id: int, attempt: int) -> None:
        """Raise Superseded unless this executor's claim is still the request's current one; renews its lease.

        Asked before every Kubernetes write: an executor paused past its lease (SIGSTOP, a long GC) while a
        survivor finished the request and people rolled it back must not wake up and re-apply the change."""
        with self.database.transaction() as db:
            if self.store.renew(db, request_id, self.executor, attempt, self.lease_seconds):
                return
        raise Superseded(f"request #{request_id}: this executor's claim (attempt {attempt}) was taken over or the "
                         "request is no longer executing; stopping with nothing more written")

    def _superseded(self, request: ApprovalRequest, attempt: int, why: str) -> ApprovalRequest:
        """A stale executor stops and says so: in its log and as an event on the incident's timeline."""
        log.error("approval request #%s: %s", request.id, why)
        with self.database.transaction() as db:
            current = self._get(db, request.id)
            self.incidents.append(db, request.incident_id, MESHBOT, EventKind.EXECUTION_SUPERSEDED, {
                "request_id": request.id, "executor": self.executor, "attempt": attempt, "state": str(current.state)})
        return current

    def _heartbeat(self, request_id: int, attempt: int, stop: threading.Event) -> None:
        while not stop.wait(self.lease_seconds / 3):
            try:
                with self.database.transaction() as db:
                    held = self.store.renew(db, request_id, self.executor, attempt, self.lease_seconds)
            except Exception:
                log.exception("approval request #%s: could not record this replica's heartbeat", request_id)
                continue
            if not held:  # finished meanwhile, or taken over: then the next write's fence check says so, loudly
                log.info("approval request #%s: this executor's claim (attempt %d) is no longer current", request_id,
                         attempt)
                return

    def release_claims(self) -> int:
        """Hand back every execution claim this process holds (SIGTERM): a survivor resumes them at its next sweep
        instead of waiting out the lease.  An execution still running here is fenced off at its next write."""
        with self._running_lock:
            held = dict(self._claims)
        released = 0
        for request_id, attempt in held.items():
            try:
                with self.database.transaction() as db:
                    released += self.store.release(db, request_id, self.executor, attempt)
            except Exception:
                log.exception("approval request #%s: could not hand back this replica's claim", request_id)
        if released:
            log.warning("handed back %d execution claim(s) for another replica to resume", released)
        return released

    def resume_abandoned(self) -> int:
        """Resume requests interrupted while executing (this process's predecessor, or a replica that died);
        applying again is safe (changes already in place are skipped).  Returns how many were submitted."""
        with self.database.transaction() as db:
            interrupted = self.store.abandoned(db, all_executing=self.database.dialect == Dialect.SQLITE)
        with self._running_lock:
            interrupted = [request_id for request_id in interrupted if request_id not in self._running]
        for request_id in interrupted:
            log.warning("resuming approval request #%s, interrupted while executing", request_id)
            self.schedule(request_id)
        return len(interrupted)

    def _record_crash(self, request_id: int, exc: Exception, attempt: int) -> None:
        """An unexpected error must not leave a request 'executing' forever with a frozen message (recorded only
        while this executor's claim is current: a survivor's execution is not ended by a stale crash)."""
        try:
            request = self._get(self.database.db, request_id)
            if request.state == RequestState.EXECUTING:
                # Unknown how far it got: count every change as possibly in place, so a rollback covers them all
                # (it skips those that never landed).
                self._finish(request, Outcome.failed(
                    f"meshbot hit an internal error while executing ({type(exc).__name__}); changes may be in "
                    "place, see its log", applied=len(request.plan.changes)), None, attempt=attempt)
        except Superseded as superseded:
            log.error("approval request #%s: %s", request_id, superseded)
        except Exception:
            log.exception("could not record the failure of approval request #%s", request_id)

    def _finish(self, request: ApprovalRequest, outcome: Outcome, checked: dict[str, Any] | None,
                preconditions: list[dict[str, Any]] | None = None, *, attempt: int | None = None) -> ApprovalRequest:
        request_id = request.id
        result = outcome.to_dict()
        if preconditions:
            result["preconditions"] = preconditions
        with self.database.transaction() as db:
            state = RequestState.SUCCEEDED if outcome.ok else RequestState.FAILED
            if not self.store.finish(db, request_id, state, result, checked, attempt=attempt):
                if attempt is not None:  # it held the claim: only a takeover can have moved the request on
                    raise Superseded(f"request #{request_id}: another executor took this execution over before its "
                                     f"outcome ({state}) could be recorded; recorded nothing")
                return self._get(db, request_id)  # someone else recorded the outcome first
            kind = EventKind.ACTION_EXECUTED if outcome.ok else EventKind.ACTION_FAILED
            self.incidents.append(db, request.incident_id, MESHBOT, kind, {
                "request_id": request_id, "action": request.action, "plan_hash": request.plan_hash,
                "approved_by": list(request.approvals), **result})
            if checked is not None:
                self.incidents.append(db, request.incident_id, MESHBOT, EventKind.ACTION_VERIFIED, {
                    "request_id": request_id, **{k: v for k, v in checked.items() if k != "baseline"}})
            if request.rollback_of is not None and outcome.ok:
                self.store.mark_rolled_back(db, request.rollback_of, request_id)
                self.announce.update_message(db, request.rollback_of, self.clock())
            done = self.announce.update_message(db, request_id, self.clock())
            self.announce.thread_note(db, done)
            self.announce.settle_incident(db, done.incident_id)
        self.outbox.wake()
        return done

    def _run(self, request: ApprovalRequest,
             attempt: int) -> tuple[Outcome, dict[str, Any] | None, list[dict[str, Any]]]:
        """Check the binding and the preconditions, write, verify the objects and then the effect."""
        if request.plan.hash != request.plan_hash:
            return Outcome.failed("the stored plan does not match its hash; nothing was run"), None, []
        if not request.binding_holds(self.incidents.audit_key()):
            # The plain hash can be recomputed by whoever edits the database; the binding needs the audit key.
            log.error("approval request #%s: the stored plan is not the one bound to it; refusing to execute",
                      request.id)
            return Outcome.failed("the stored plan is not the one approved for this request (its binding with the "
                                  "audit key fails: edited in the database, or opened before the audit key); "
                                  "nothing was run"), None, []
        try:
            stop, preconditions = self.effects.blocked(request.plan)
            if stop:
                # A change istiod cannot push, or pods the CA cannot certify, would be "done" and change nothing
                # or make it worse: the precondition's own fix goes first.
                return Outcome.failed(stop), None, preconditions
            baseline = self.effects.baseline(request.plan)
            client = self.kube()
            outcome = apply(client, request.plan, before_write=lambda change: self._fence(request.id, attempt))
            if not (outcome.applied or outcome.ok):
                return outcome, None, preconditions
            checked: dict[str, Any] = verify(client, request.plan).to_dict()
        except MeshbotError as exc:
            return Outcome.failed(str(exc)), None, []
        if outcome.ok:
            checked.update(self.effects.after(request.plan, baseline, self.clock()))
        return outcome, checked, preconditions

    def run_follow_ups(self) -> int:
        """The second look at executed requests whose follow-up is due; returns how many were looked at."""
        now = self.clock()
        with self.database.transaction() as db:
            due = [r for r in (self._get(db, i) for i in self.store.succeeded_since(db, now - FOLLOW_UP_WINDOW))
                   if follow_up_due(r.verification, now)]
        for request in due:
            report = self.effects.follow_up(request.plan, request.verification or {})
            if report is None:
                continue
            looked = {**(request.verification or {}), "follow_up": {**report.to_dict(), "at": rfc3339(now)}}
            with self.database.transaction() as db:
                if not self.store.replace_verification(db, request.id, request.verification, looked):
                    continue  # another replica recorded it first
                self.incidents.append(db, request.incident_id, MESHBOT, EventKind.ACTION_VERIFIED, {
                    "request_id": request.id, "follow_up": True, "effect": report.to_dict()})
                updated = self.announce.update_message(db, request.id, now)
                incident = self.incidents.get_in(db, request.incident_id)
                if incident.top_message is not None:
                    self.outbox.post(db, incident_id=incident.id, channel=request.channel, thread_of=incident.top_message,
                                     message=approval_blocks.follow_up_note(updated, report))
                headline.refresh_top(db, self.incidents, self.outbox, request.incident_id, now)
        if due:
            self.outbox.wake()
        return len(due)

    def _get(self, db: sqlite_utils.Database, request_id: int) -> ApprovalRequest:
        return self.store.require(db, request_id)
