"""Approval requests from asking to deciding: plan, dry-run, votes, expiry, rollback requests.

The rule (who may vote, how many approvals) is ``bot.approvals.rule.decide``;
this module applies it inside one SQLite transaction per click, so concurrent
clicks are serialised and the switch to *executing* is a conditional update
that can succeed once.  The plan is stored with its hash when the request is
opened; what runs is that stored plan, whatever a client sends later.
Every request, click (accepted or refused, with the reason), execution,
verification and rollback is an event in the incident log.  Running an approved request (claim, fencing,
heartbeat, outcome, resuming orphans, follow-ups) is ``bot.approvals.execution``; the desk hands it the request
and draws what it shows (``Announcer``).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import sqlite_utils

from bot.approvals import authority
from bot.approvals import blocks as approval_blocks
from bot.approvals.execution import EXECUTION_LEASE, Executions
from bot.approvals.inspection import MeshInspector
from bot.approvals.rule import Click, Decision, RequestState, Verdict, Vote, decide, is_approver
from bot.approvals.store import ApprovalRequest, ApprovalStore
from bot.approvals.verification import ExecutionChecks
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
from commands.actions import ActionTarget, Plan, dry_run, plan_action, plan_diff, rollback_plan
from commands.actions.annotate import annotate_plan, annotate_rollback, needs_and_scope
from commands.actions.dependencies import Precondition
from commands.clients.kube import KubeClient
from commands.errors import UserError
from commands.findings import Finding

log = logging.getLogger(__name__)

MESHBOT = "meshbot"
MANUAL_SOURCE = "slack"
"""``Incident.source`` of the incident a request typed outside any incident opens."""

MAX_ID_DIGITS = 12


def _database_clock() -> datetime:
    """Stands for the desk's database's clock until ``__post_init__`` puts ``Database.now`` in its place."""
    return datetime.now(timezone.utc)


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
    """The approvals' own small pool: asks (plan, preconditions, dry run) and executions, apart from diagnoses."""
    clock: Callable[[], datetime] = field(default=_database_clock)
    """What requests are timed by (created, expiring, clicked): the database's clock unless a test gives one, so a
    replica whose own clock is minutes off expires nothing early (``Database.now``)."""
    store: ApprovalStore = field(default_factory=ApprovalStore)
    groups: GroupDirectory | None = None
    """Who is in the approver user groups, shared with the role checks (None: a directory of its own)."""
    _sweeper: WakeableLoop | None = None
    executor: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    """This replica, as the executor of the requests it runs (with several replicas on PostgreSQL)."""
    execution_lease: timedelta = EXECUTION_LEASE
    """An executor that has not heartbeated for this long is taken for dead; one survivor resumes its request."""
    inspector: MeshInspector | None = None
    """Fresh diagnoses and observations for preconditions and verification by effect (None: neither)."""
    effects: ExecutionChecks = field(init=False)
    executions: Executions = field(init=False)

    def __post_init__(self) -> None:
        if self.groups is None:
            self.groups = GroupDirectory(self.slack.usergroup_members)
        self.effects = ExecutionChecks(self.inspector)
        if self.clock is _database_clock:
            self.clock = self.database.now
        # Through lambdas: the desk's client factory, clock and pool stay the one place to replace them.
        self.executions = Executions(
            database=self.database, incidents=self.incidents, outbox=self.outbox, store=self.store, announce=self,
            required=self.policy.required, ttl=self.policy.ttl, kube=lambda: self.kube(), clock=lambda: self.clock(),
            submit=lambda *call: self.workers.submit(*call), effects=self.effects, executor=self.executor,
            lease=self.execution_lease)

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
        plan = annotate_plan(plan, target, client, checked, findings,
                             callers=self.inspector.callers if self.inspector else None)
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
                self._move(db, request, RequestState.EXPIRED, None, now)
            elif decision.accepted:
                self._record(db, request, user, vote, decision, now)
        self.outbox.wake()
        if decision.verdict == Verdict.EXECUTE:
            self.executions.schedule(request_id)
        return ClickAnswer(decision.accepted, click_answer(decision, request.id, request.action))

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
            updated = self.update_message(db, request_id, now)
            self.thread_note(db, updated)
            self.settle_incident(db, updated.incident_id)
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
            self.update_message(db, request.id, now)

    def _move(self, db: sqlite_utils.Database, request: ApprovalRequest, to: RequestState, by: str | None,
              now: datetime) -> None:
        if not self.store.transition(db, request.id, RequestState.PENDING, to, by=by, now=now):
            # decide() saw PENDING inside this same transaction, so this cannot happen; refuse loudly if it does.
            raise RuntimeError(f"request #{request.id} left 'pending' under a held write lock")
        self.incidents.append(db, request.incident_id, by or MESHBOT, EventKind.APPROVAL_STATE, {
            "request_id": request.id, "from": "pending", "to": str(to)})
        updated = self.update_message(db, request.id, now)
        if to in (RequestState.REJECTED, RequestState.EXPIRED):
            self.thread_note(db, updated)
            self.settle_incident(db, updated.incident_id)

    # -- executing: bot.approvals.execution does it; these keep the desk the one handle on approvals -----------

    def execute(self, request_id: int) -> ApprovalRequest:
        return self.executions.execute(request_id)

    def resume_abandoned(self) -> int:
        return self.executions.resume_abandoned()

    def run_follow_ups(self) -> int:
        return self.executions.run_follow_ups()

    # -- housekeeping -------------------------------------------------------------------------

    def expire_due(self) -> int:
        """Close pending requests past their expiry (their buttons stop working anyway); returns how many."""
        now = self.clock()
        with self.database.transaction() as db:
            expired = self.store.expired_ids(db, now)
            for request_id in expired:
                self._move(db, self._get(db, request_id), RequestState.EXPIRED, None, now)
        if expired:
            self.outbox.wake()
        return len(expired)

    def check_quorum(self) -> None:
        """Refuse a quorum the approvers can never meet (SettingsError); a user group counts by its members (only
        Slack knows them: when it cannot answer now, start anyway and say why; clicks read the group again)."""
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
        self._sweeper = WakeableLoop("approvals", self._sweep_pass, idle=min(interval, self.executions.lease_seconds / 2))
        self._sweeper.start()
        self.resume_abandoned()
        return self

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
        self.executions.release_claims()
        # An execution still running ends at its next fenced write once a survivor resumes it; nothing new starts.
        self.workers.shutdown(wait=False)

    def get(self, request_id: int) -> ApprovalRequest:
        return self._get(self.database.db, request_id)

    # -- helpers ------------------------------------------------------------------------------------

    def _get(self, db: sqlite_utils.Database, request_id: int) -> ApprovalRequest:
        return self.store.require(db, request_id)

    def update_message(self, db: sqlite_utils.Database, request_id: int, now: datetime) -> ApprovalRequest:
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

    def settle_incident(self, db: sqlite_utils.Database, incident_id: int) -> None:
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

    def thread_note(self, db: sqlite_utils.Database, request: ApprovalRequest) -> None:
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
