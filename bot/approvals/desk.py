"""Approval requests from asking to executing: plan, dry-run, votes, the action itself, rollback.

Over 450 lines because a request's states share one transaction discipline; the execution half is the next split.

The rule (who may vote, how many approvals) is ``bot.approvals.rule.decide``;
this module applies it inside one SQLite transaction per click, so concurrent
clicks are serialised and the switch to *executing* is a conditional update
that can succeed once.  The plan is stored with its hash when the request is
opened; what runs is that stored plan, whatever a client sends later.
Every request, click (accepted or refused, with the reason), execution,
verification and rollback is an event in the incident log.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlite_utils

from bot.approvals import authority
from bot.approvals import blocks as approval_blocks
from bot.approvals.inspection import MeshInspector
from bot.approvals.rule import Click, Decision, RequestState, Verdict, Vote, decide, is_approver
from bot.approvals.store import ApprovalRequest, ApprovalStore
from bot.approvals.verification import ExecutionChecks, follow_up_due
from bot.incidents import blocks as incident_blocks
from bot.incidents import headline
from bot.incidents.log import IncidentLog
from bot.incidents.records import EventKind, Incident
from bot.runtime.loops import WakeableLoop
from bot.settings import SettingsError, quorum_exceeds_approvers
from bot.slack.blocks import Message
from bot.slack.client import SlackClient, SlackError
from bot.slack.groups import GroupDirectory
from bot.slack.outbox import Outbox
from bot.storage.database import Database
from bot.storage.dialect import Dialect
from commands.actions import ActionTarget, Outcome, Plan, apply, dry_run, plan_action, plan_diff, rollback_plan, verify
from commands.actions.annotate import annotate_plan, annotate_rollback, needs_and_scope
from commands.actions.dependencies import Precondition
from commands.clients.kube import KubeClient
from commands.errors import MeshbotError, UserError
from commands.findings import Finding
from commands.times import rfc3339

log = logging.getLogger(__name__)

MESHBOT = "meshbot"
MANUAL_SOURCE = "slack"
"""``Incident.source`` of the incident a request typed outside any incident opens."""


MAX_ID_DIGITS = 12
EXECUTION_LEASE = timedelta(seconds=15)
"""How long an execution claim lasts without a heartbeat (renewed every third of it) before a survivor resumes it."""


def _database_clock() -> datetime:
    """Stands for the desk's database's clock until ``__post_init__`` puts ``Database.now`` in its place."""
    return datetime.now(timezone.utc)
FOLLOW_UP_WINDOW = timedelta(days=1)
"""Executed requests older than this get no follow-up (a bot down for a day has more to say than that)."""


def request_number(value: str) -> int | None:
    """The request ID a button carries, or None when the value is not one."""
    # isdigit() also accepts "²" and other Unicode digits, which int() refuses: ASCII digits only.
    return int(value) if value.isascii() and value.isdigit() and len(value) <= MAX_ID_DIGITS else None


@dataclass(frozen=True)
class ApprovalPolicy:
    approvers: tuple[str, ...]
    """Slack user IDs (U…/W…) and user group IDs (S…)."""
    required: int = 2
    ttl: timedelta = timedelta(minutes=30)

    @property
    def users(self) -> frozenset[str]:
        return frozenset(a for a in self.approvers if not a.startswith("S"))

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(a for a in self.approvers if a.startswith("S"))


def click_answer(decision: Decision, request_id: int, action: str) -> str:
    """What the person who clicked (or typed ``/mesh approve N``) is told; docs/slack-app.md tabulates every case."""
    if decision.verdict == Verdict.REFUSED:
        return f":no_entry_sign: {decision.reason}."
    if decision.verdict == Verdict.REJECTED:
        return f"Request #{request_id} closed ({decision.reason}); nothing was changed."
    if decision.verdict == Verdict.EXECUTE:
        return f"Approved: `{action}` is running now."
    return f"Approval recorded ({decision.reason})."


@dataclass(frozen=True)
class ClickAnswer:
    """What the person who clicked is told (privately), and whether anything changed."""

    accepted: bool
    text: str


@dataclass
class ApprovalDesk:
    database: Database
    incidents: IncidentLog
    outbox: Outbox
    slack: SlackClient
    policy: ApprovalPolicy
    kube: Callable[[], KubeClient]
    """The cluster client for planning and executing (raises when actions are not possible)."""
    workers: ThreadPoolExecutor
    clock: Callable[[], datetime] = field(default=_database_clock)
    """What requests are timed by (created, expiring, clicked): the database's clock unless a test gives one, so a
    replica whose own clock is minutes off expires nothing early (``Database.now``)."""
    store: ApprovalStore = field(default_factory=ApprovalStore)
    groups: GroupDirectory | None = None
    """Who is in the approver user groups, shared with the role checks (None: a directory of its own)."""
    _sweeper: WakeableLoop | None = None
    _running: set[int] = field(default_factory=set)
    """Requests being executed by this process: a click and the start-up resume must not both run one."""
    _running_lock: threading.Lock = field(default_factory=threading.Lock)
    executor: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    """This replica, as the executor of the requests it runs (with several replicas on PostgreSQL)."""
    execution_lease: timedelta = EXECUTION_LEASE
    """An executor that has not heartbeated for this long is taken for dead; one survivor resumes its request."""
    inspector: MeshInspector | None = None
    """Fresh diagnoses and observations for preconditions and verification by effect (None: neither)."""
    effects: ExecutionChecks = field(init=False)

    _claims: dict[int, int] = field(default_factory=dict)
    """Requests this process holds the execution claim of, with its fencing token (attempt): handed back on stop."""

    def __post_init__(self) -> None:
        if self.groups is None:
            self.groups = GroupDirectory(self.slack.usergroup_members)
        self.effects = ExecutionChecks(self.inspector)
        if self.clock is _database_clock:
            self.clock = self.database.now

    # -- asking ------------------------------------------------------------------------------

    def request(self, target: ActionTarget, *, requester: str, reason: str, channel: str,
                incident_id: int | None = None) -> int:
        """Plan and dry-run an action, then open a request in the incident's thread (a new one if needed)."""
        incident = self.incidents.get(incident_id) if incident_id is not None else None
        if incident is not None and incident.top_message is None:
            raise UserError(f"incident #{incident.id} has no Slack thread to ask in")
        client = self.kube()
        plan = plan_action(client, target, self.clock())
        # Preconditions (a fresh diagnosis) and what the card shows beside the diff, bound into the plan's hash.
        checked, findings = self._preconditions(target)
        plan = annotate_plan(plan, target, client, checked, findings)
        return self._open(plan, requester=requester, reason=reason,
                          channel=(incident.channel if incident else None) or channel,
                          incident=incident, client=client)

    def request_rollback(self, request_id: int, *, requester: str) -> int:
        with self.database.transaction() as db:
            original = self._get(db, request_id)
            if not original.plan.reversible:
                raise UserError(f"`{original.action}` has no rollback")
            self._refuse_second_rollback(db, request_id)
            if not original.can_roll_back:
                raise UserError(f"request #{request_id} changed nothing that could be rolled back")
        incident = self.incidents.get(original.incident_id)
        plan = rollback_plan(original.plan, original.applied)
        # What breaks if the original cause is still there, from a diagnosis run now.
        risk = self.inspector.preconditions if self.inspector else None
        plan = annotate_rollback(plan, original.plan, risk)
        return self._open(plan, requester=requester, reason=f"rollback of request #{request_id}",
                          channel=original.channel, incident=incident, client=self.kube(), rollback_of=request_id)

    def _preconditions(self, target: ActionTarget) -> tuple[tuple[Precondition, ...], list[Finding]]:
        if self.inspector is None:
            return (), []
        return self.inspector.preconditions(*needs_and_scope(target))

    def _refuse_second_rollback(self, db: sqlite_utils.Database, request_id: int) -> None:
        if self._get(db, request_id).rolled_back_by or self.store.pending_rollback_of(db, request_id):
            raise UserError(f"a rollback of request #{request_id} was already requested")

    def _open(self, plan: Plan, *, requester: str, reason: str, channel: str, incident: Incident | None,
              client: KubeClient, rollback_of: int | None = None) -> int:
        rehearsal = dry_run(client, plan)
        if not rehearsal.ok:
            # Approving a plan the API server already refuses would only waste two people's time.
            raise UserError(f"the server-side dry run failed, so nothing was requested: {rehearsal.error}")
        now = self.clock()
        with self.database.transaction() as db:
            if rollback_of is not None:
                self._refuse_second_rollback(db, rollback_of)  # again: two people may press Rollback at once
            if incident is None:
                incident = self._manual_incident(db, plan, requester, channel)
            request_id = self.store.insert(
                db, incident_id=incident.id, plan=plan, dry_run=rehearsal.to_dict(), requester=requester,
                reason=reason, channel=incident.channel or channel, required=self.policy.required, now=now,
                expires_at=now + self.policy.ttl, key=self.incidents.audit_key(), rollback_of=rollback_of)
            self.incidents.append(db, incident.id, requester, EventKind.APPROVAL_REQUESTED, {
                "request_id": request_id, "action": plan.action, "plan_hash": plan.hash, "summary": plan.summary,
                "changes": [f"{c.op} {c.origin}" for c in plan.changes], "notes": list(plan.notes),
                "reason": reason, "dry_run": rehearsal.to_dict(), "required": self.policy.required,
                "rollback_of": rollback_of})
            request = self._get(db, request_id)
            entry = self.outbox.post(db, incident_id=incident.id, channel=request.channel,
                                     message=self._request_message(request, now), thread_of=incident.top_message)
            self.store.set_message(db, request_id, entry)
            if self._plan_attached(request):
                self.outbox.upload(db, incident_id=incident.id, channel=request.channel,
                                   thread_of=incident.thread_top(), filename=f"request-{request_id}-plan.txt",
                                   title=f"Plan of request #{request_id}: /mesh {request.action}",
                                   content=approval_blocks.plan_file(request))
        self.outbox.wake()
        return request_id

    def _manual_incident(self, db: sqlite_utils.Database, plan: Plan, requester: str, channel: str) -> Incident:
        """A request typed outside any incident gets its own incident, so it has a thread and a log."""
        incident_id = self.incidents.create(
            db, group_key=f"manual:{uuid.uuid4()}", title=f"Remediation requested: {plan.action}",
            severity="warning", channel=channel, labels={}, namespaces=[], services=[], external_url="",
            playbook=None, source=MANUAL_SOURCE)
        self.incidents.mark_diagnosed(db, incident_id)
        self.incidents.append(db, incident_id, requester, EventKind.INCIDENT_OPENED,
                              {"source": "slack", "reason": f"/mesh {plan.action}"})
        incident = self.incidents.get_in(db, incident_id)
        top = self.outbox.post(db, incident_id=incident_id, channel=channel,
                               message=incident_blocks.manual_incident_message(incident, requester, plan.action))
        self.incidents.set_top_message(db, incident_id, top)
        return self.incidents.get_in(db, incident_id)

    # -- voting ---------------------------------------------------------------------------------

    def click(self, request_id: int, user: str, vote: Vote) -> ClickAnswer:
        approver = self._approver(user)  # None: a group could not be read (refused as "could not check", audited)
        with self.database.transaction() as db:
            request = self._get(db, request_id)
            now = self.clock()
            decision = decide(request.ballot(), Click(user, vote, now, approver))
            self.incidents.append(db, request.incident_id, user, EventKind.APPROVAL_CLICK, {
                "request_id": request_id, "vote": str(vote), "accepted": decision.accepted,
                "verdict": str(decision.verdict), "reason": decision.reason})
            if request.state == RequestState.PENDING and now >= request.expires_at:
                self._expire(db, request, now)
            elif decision.accepted:
                self._record(db, request, user, vote, decision, now)
        self.outbox.wake()
        if decision.verdict == Verdict.EXECUTE:
            self.workers.submit(self._execute_safely, request_id)
        return ClickAnswer(decision.accepted, self._answer(decision, request))

    def defer_rollback(self, request_id: int, user: str) -> ClickAnswer:
        """"Roll back later": close a pending rollback and leave the change in place, recording who chose so."""
        now = self.clock()
        with self.database.transaction() as db:
            request = self._get(db, request_id)
            if request.rollback_of is None:
                raise UserError(f"request #{request_id} is not a rollback; only a rollback can be left for later")
            if not self.store.close_deferred(db, request_id, user, now):
                return ClickAnswer(False, f"Rollback #{request_id} is no longer waiting; nothing changed.")
            self.incidents.append(db, request.incident_id, user, EventKind.APPROVAL_STATE, {
                "request_id": request_id, "from": "pending", "to": "rejected", "deferred": True})
            updated = self._update_message(db, request_id, now)
            self._thread_note(db, updated)
            self._settle_incident(db, updated.incident_id)
        self.outbox.wake()
        return ClickAnswer(True, f"Rollback #{request_id} left for later: request #{request.rollback_of}'s change stays "
                                 "in place, and its Rollback button stays on the incident's top message.")

    def record_refused_click(self, user: str, button: str, value: str, reason: str) -> None:
        """A press refused before the rule was asked (wrong channel, malformed or unknown request): audit it too."""
        request_id = request_number(value)
        with self.database.transaction() as db:
            request = self.store.get(db, request_id) if request_id is not None else None
            self.incidents.append(db, request.incident_id if request else None, user, EventKind.APPROVAL_CLICK, {
                "request_id": request.id if request else None, "button": button, "value": value[:100],
                "accepted": False, "verdict": "refused", "reason": reason})

    def _record(self, db: sqlite_utils.Database, request: ApprovalRequest, user: str, vote: Vote,
                decision: Decision, now: datetime) -> None:
        self.store.add_vote(db, request.id, user, vote, now)
        if decision.verdict == Verdict.REJECTED:
            self._move(db, request, RequestState.REJECTED, user, now)
        elif decision.verdict == Verdict.EXECUTE:
            authority.grant(db, self.incidents, request, decision.approvals)  # the single-use grant, HMAC'd
            self._move(db, request, RequestState.EXECUTING, user, now)
        else:
            self._update_message(db, request.id, now)

    def _move(self, db: sqlite_utils.Database, request: ApprovalRequest, to: RequestState, by: str | None,
              now: datetime) -> None:
        if not self.store.transition(db, request.id, RequestState.PENDING, to, by=by, now=now):
            # decide() saw PENDING inside this same transaction, so this cannot happen; refuse loudly if it does.
            raise RuntimeError(f"request #{request.id} left 'pending' under a held write lock")
        self.incidents.append(db, request.incident_id, by or MESHBOT, EventKind.APPROVAL_STATE, {
            "request_id": request.id, "from": "pending", "to": str(to)})
        updated = self._update_message(db, request.id, now)
        if to in (RequestState.REJECTED, RequestState.EXPIRED):
            self._thread_note(db, updated)
            self._settle_incident(db, updated.incident_id)

    def _expire(self, db: sqlite_utils.Database, request: ApprovalRequest, now: datetime) -> None:
        self._move(db, request, RequestState.EXPIRED, None, now)

    def _answer(self, decision: Decision, request: ApprovalRequest) -> str:
        return click_answer(decision, request.id, request.action)

    # -- executing ------------------------------------------------------------------------------

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
                return self.get(request_id)
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
            attempt = self.store.claim_execution(db, request_id, self.executor, self._lease_seconds,
                                                 take_over_live=self.database.dialect == Dialect.SQLITE)
            if attempt is None:
                return request
            # The row's state, required count, expiry and vote rows are columns a database writer sets: the
            # authority to run (and to resume) is recomputed from the keyed log (bot.approvals.authority).
            refused = authority.refusal(db, self.incidents, request, self.policy.required, self.policy.ttl)
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
            return self._finish(request, outcome, checked, preconditions, attempt=attempt)
        except Superseded as exc:
            return self._superseded(request, attempt, str(exc))
        except Exception as exc:
            log.exception("executing approval request #%s failed", request_id)
            self._record_crash(request_id, exc, attempt)
            return self.get(request_id)
        finally:
            stop.set()
            beating.join()
            with self._running_lock:
                self._claims.pop(request_id, None)

    @property
    def _lease_seconds(self) -> float:
        return self.execution_lease.total_seconds()

    def _fence(self, request_id: int, attempt: int) -> None:
        """Raise Superseded unless this executor's claim is still the request's current one; renews its lease.

        Asked before every Kubernetes write: an executor paused past its lease (SIGSTOP, a long GC) while a
        survivor finished the request and people rolled it back must not wake up and re-apply the change."""
        with self.database.transaction() as db:
            if self.store.renew(db, request_id, self.executor, attempt, self._lease_seconds):
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
        while not stop.wait(self._lease_seconds / 3):
            try:
                with self.database.transaction() as db:
                    held = self.store.renew(db, request_id, self.executor, attempt, self._lease_seconds)
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

    def _record_crash(self, request_id: int, exc: Exception, attempt: int) -> None:
        """An unexpected error must not leave a request 'executing' forever with a frozen message (recorded only
        while this executor's claim is current: a survivor's execution is not ended by a stale crash)."""
        try:
            request = self.get(request_id)
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
                self._update_message(db, request.rollback_of, self.clock())
            done = self._update_message(db, request_id, self.clock())
            self._thread_note(db, done)
            self._settle_incident(db, done.incident_id)
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
                updated = self._update_message(db, request.id, now)
                incident = self.incidents.get_in(db, request.incident_id)
                if incident.top_message is not None:
                    self.outbox.post(db, incident_id=incident.id, channel=request.channel, thread_of=incident.top_message,
                                     message=approval_blocks.follow_up_note(updated, report))
                headline.refresh_top(db, self.incidents, self.outbox, request.incident_id, now)
        if due:
            self.outbox.wake()
        return len(due)

    # -- housekeeping -------------------------------------------------------------------------

    def expire_due(self) -> int:
        """Close pending requests past their expiry (their buttons stop working anyway); returns how many."""
        now = self.clock()
        with self.database.transaction() as db:
            expired = self.store.expired_ids(db, now)
            for request_id in expired:
                request = self._get(db, request_id)
                self._expire(db, request, now)
        if expired:
            self.outbox.wake()
        return len(expired)

    def check_quorum(self) -> None:
        """Refuse a quorum the approvers can never meet (SettingsError); a user group counts by its members.

        Settings already refuse a list of users that is too short; a group's size only Slack knows.  When the
        group cannot be read now, start anyway (the log says why): clicks read it again when they come.
        """
        if not self.policy.groups:
            return
        members: set[str] = set()
        for group in self.policy.groups:
            try:
                found = frozenset(self.slack.usergroup_members(group))
            except SlackError as exc:
                log.warning("cannot read approver group %s (%s) to check MESHBOT_REQUIRED_APPROVALS against it",
                            group, exc.error)
                return
            self._directory().remember(group, found)
            members |= found
        problem = quorum_exceeds_approvers(self.policy.approvers, self.policy.required,
                                           len(members - self.policy.users))
        if problem:
            raise SettingsError(problem)

    def start(self, interval: float = 30.0) -> ApprovalDesk:
        self.check_quorum()
        # Sweeps at least twice a lease, so an orphaned execution is resumed within 1.5 leases of its last renewal.
        self._sweeper = WakeableLoop("approvals", self._sweep_pass, idle=min(interval, self._lease_seconds / 2))
        self._sweeper.start()
        self.resume_abandoned()
        return self

    def resume_abandoned(self) -> int:
        """Resume requests interrupted while executing (this process's predecessor, or a replica that died);
        applying again is safe (changes already in place are skipped).  Returns how many were submitted."""
        with self.database.transaction() as db:
            interrupted = self.store.abandoned(db, all_executing=self.database.dialect == Dialect.SQLITE)
        with self._running_lock:
            interrupted = [request_id for request_id in interrupted if request_id not in self._running]
        for request_id in interrupted:
            log.warning("resuming approval request #%s, interrupted while executing", request_id)
            self.workers.submit(self._execute_safely, request_id)
        return len(interrupted)

    def _sweep_pass(self) -> None:
        self.expire_due()  # None: the loop waits `interval` before the next sweep
        self.run_follow_ups()
        # A replica that died mid-action (one survivor's claim wins), or an execution whose claim could not be
        # written (the database was unreachable at that moment): resumed, on both backends.
        self.resume_abandoned()

    def stop(self) -> None:
        self.effects.stop.set()
        if self._sweeper:
            self._sweeper.stop()
        self.release_claims()
        # An execution still running ends at its next fenced write once a survivor resumes it; nothing new starts.
        self.workers.shutdown(wait=False)

    def get(self, request_id: int) -> ApprovalRequest:
        return self._get(self.database.db, request_id)

    # -- helpers ------------------------------------------------------------------------------------

    def _get(self, db: sqlite_utils.Database, request_id: int) -> ApprovalRequest:
        request = self.store.get(db, request_id)
        if request is None:
            raise UserError(f"there is no approval request #{request_id}")
        return request

    def _update_message(self, db: sqlite_utils.Database, request_id: int, now: datetime) -> ApprovalRequest:
        request = self._get(db, request_id)
        if request.message_entry is not None:
            self.outbox.update(db, incident_id=request.incident_id, channel=request.channel,
                               message=self._request_message(request, now), of=request.message_entry)
        return request

    def _request_message(self, request: ApprovalRequest, now: datetime) -> Message:
        return approval_blocks.request_message(request, now, approvers=self.policy.approvers,
                                               plan_attached=self._plan_attached(request))

    @staticmethod
    def _plan_attached(request: ApprovalRequest) -> bool:
        return approval_blocks.diff_is_long(plan_diff(request.plan))

    def _settle_incident(self, db: sqlite_utils.Database, incident_id: int) -> None:
        """After an outcome: the incident's top message shows what is in effect now; a manual incident (one
        request typed outside any incident) closes once nothing is waiting, running or left to roll back."""
        incident = self.incidents.get_in(db, incident_id)
        if incident.source == MANUAL_SOURCE and incident.status == "open" and self._nothing_left(db, incident_id):
            self.incidents.close(db, incident_id, MESHBOT, "its action and any rollback ended")
            view = headline.refresh_top(db, self.incidents, self.outbox, incident_id, self.clock())
            if incident.top_message is not None:
                self.outbox.post(db, incident_id=incident_id, channel=incident.channel or "",
                                 message=incident_blocks.incident_resolved_note(view, self.clock()),
                                 thread_of=incident.top_message)
            return
        headline.refresh_top(db, self.incidents, self.outbox, incident_id, self.clock())

    def _nothing_left(self, db: sqlite_utils.Database, incident_id: int) -> bool:
        requests = [self._get(db, row[0]) for row in db.execute(
            "SELECT id FROM approval_requests WHERE incident_id = ?", [incident_id]).fetchall()]
        waiting = any(r.state in (RequestState.PENDING, RequestState.EXECUTING) for r in requests)
        # A reversible change that is still in place keeps the incident open until it is rolled back (or someone
        # resolves it with /mesh incident resolve): the top message keeps saying what is in effect.
        in_place = any(r.can_roll_back for r in requests)
        return not waiting and not in_place

    def _thread_note(self, db: sqlite_utils.Database, request: ApprovalRequest) -> None:
        incident = self.incidents.get_in(db, request.incident_id)
        if incident.top_message is not None:
            self.outbox.post(db, incident_id=incident.id, channel=request.channel,
                             message=approval_blocks.result_note(request), thread_of=incident.top_message)

    def _directory(self) -> GroupDirectory:
        if self.groups is None:  # __post_init__ sets it: only clearing it afterwards gets here
            raise RuntimeError("the approval desk has no group directory")
        return self.groups

    def _approver(self, user: str) -> bool | None:
        """Whether ``user`` may vote: listed by ID, or in an approver group; None when a group they might be in
        could not be read (its cached answer expired and Slack did not answer): fail closed, never the last
        known members (a removed approver's vote must not count)."""
        if is_approver(user, self.policy.users, frozenset()):
            return True
        unreadable = []
        for group in self.policy.groups:
            try:
                if user in self._directory().members(group):
                    return True
            except SlackError as exc:
                log.warning("cannot read approver group %s (%s): votes needing it are refused", group, exc.error)
                unreadable.append(group)
        return None if unreadable else False


class Superseded(Exception):
    """This executor's claim is no longer the request's current one (fencing): it stops and writes nothing more."""
