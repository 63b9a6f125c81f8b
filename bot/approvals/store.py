"""Approval requests and votes in SQLite.  Every method runs inside the caller's transaction.

The stored plan is bound to its request with the audit key (HMAC over the
canonical plan and the request id): whoever can edit the database but not read
the key cannot change what an approved request will execute, nor move a plan
to another request.  The plain ``plan_hash`` stays for display and the log.
The other columns (state, required, expiry) and the vote rows are for display
and for finding work: authority to execute is recomputed from the keyed log
(``bot.approvals.authority``).
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlite_utils

from bot.approvals.rule import Ballot, RequestState, Vote
from bot.incidents.audit import AuditKey
from bot.incidents.records import iso, stored_time
from bot.storage.database import inserted_id, migration
from bot.storage.dialect import Lock, lock_key
from commands.actions import Plan
from commands.errors import UserError


@migration(3, "approval requests and their votes")
def _create_approval_tables(db: sqlite_utils.Database) -> None:
    db.executescript("""
        CREATE TABLE approval_requests (
            id INTEGER PRIMARY KEY,
            incident_id INTEGER NOT NULL REFERENCES incidents(id),
            action TEXT NOT NULL,
            plan TEXT NOT NULL,
            plan_hash TEXT NOT NULL,
            dry_run TEXT NOT NULL,
            requester TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            channel TEXT NOT NULL,
            message_entry INTEGER REFERENCES outbox(id),
            state TEXT NOT NULL,
            required INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            decided_by TEXT,
            decided_at TEXT,
            result TEXT,
            verification TEXT,
            rollback_of INTEGER REFERENCES approval_requests(id),
            rolled_back_by INTEGER REFERENCES approval_requests(id)
        );
        CREATE INDEX approval_requests_pending ON approval_requests(state, expires_at);
        CREATE TABLE approval_votes (
            request_id INTEGER NOT NULL REFERENCES approval_requests(id),
            user TEXT NOT NULL,
            vote TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (request_id, user)
        );
    """)


@migration(6, "approval plans bound to their request with the audit key")
def plan_binding(db: sqlite_utils.Database) -> None:
    # Requests opened before the key have no binding: they cannot execute and must be requested again.
    db.execute("ALTER TABLE approval_requests ADD COLUMN plan_binding TEXT")


@migration(8, "execution leases: which replica executes an approved request, and its last heartbeat")
def execution_lease(db: sqlite_utils.Database) -> None:
    # With several replicas on PostgreSQL, a request whose executor stopped heartbeating is resumed by one survivor.
    db.execute("ALTER TABLE approval_requests ADD COLUMN executor TEXT")
    db.execute("ALTER TABLE approval_requests ADD COLUMN heartbeat_at TEXT")


@migration(10, "execution fencing: each claim's attempt number and its lease end on the database's clock")
def execution_fencing(db: sqlite_utils.Database) -> None:
    # ``attempt`` is the fencing token: every claim increments it, and every later write of the execution
    # (a Kubernetes write, the heartbeat, the outcome) checks it is still the holder's, so an executor paused
    # past its lease (SIGSTOP, a long GC) finds it superseded instead of re-applying a rolled-back change.
    # ``lease_until`` is epoch seconds on the database's clock (``DATABASE_EPOCH``), never a replica's own; double
    # precision on both backends (PostgreSQL's REAL is 4 bytes: about two minutes of resolution at today's epoch).
    db.execute("ALTER TABLE approval_requests ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE approval_requests ADD COLUMN lease_until DOUBLE PRECISION")


MIGRATIONS = (_create_approval_tables,)
"""This module's first schema change; ``plan_binding`` (6), ``execution_lease`` (8) and ``execution_fencing`` (10)
are listed after the others in ``bot.server.schema``."""


def bind_plan(key: AuditKey, plan: Plan, request_id: int) -> str:
    """HMAC-SHA256 over the request id and the canonical plan: what was approved, for this request only."""
    return key.mac(f"approval-plan:{request_id}:".encode() + plan.canonical_json().encode())


@dataclass(frozen=True)
class ApprovalRequest:
    id: int
    incident_id: int
    action: str
    plan: Plan
    plan_hash: str
    dry_run: dict[str, Any]
    requester: str
    reason: str
    channel: str
    message_entry: int | None
    state: RequestState
    required: int
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    result: dict[str, Any] | None
    verification: dict[str, Any] | None
    rollback_of: int | None
    rolled_back_by: int | None
    approvals: tuple[str, ...]
    plan_binding: str | None = None

    def binding_holds(self, key: AuditKey) -> bool:
        """True when the stored plan is the one bound to this request with ``key`` when it was opened."""
        return self.plan_binding is not None and hmac.compare_digest(self.plan_binding,
                                                                     bind_plan(key, self.plan, self.id))

    def ballot(self) -> Ballot:
        return Ballot(requester=self.requester, state=self.state, required=self.required,
                      expires_at=self.expires_at, approvals=self.approvals, decided_by=self.decided_by)

    @property
    def applied(self) -> int:
        return int((self.result or {}).get("applied") or 0)

    @property
    def deferred(self) -> bool:
        """A rollback someone chose to leave for later ("roll back later")."""
        return bool((self.result or {}).get("deferred"))

    @property
    def can_roll_back(self) -> bool:
        return (self.plan.reversible and self.rolled_back_by is None and self.applied > 0
                and self.state in (RequestState.SUCCEEDED, RequestState.FAILED))


DEFERRED = {"ok": False, "deferred": True, "applied": 0}
"""The result of a rollback left for later: nothing ran, and the change it would undo stays in place."""


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None


class ApprovalStore:
    def insert(self, db: sqlite_utils.Database, *, incident_id: int, plan: Plan, dry_run: dict[str, Any],
               requester: str, reason: str, channel: str, required: int, now: datetime, expires_at: datetime,
               key: AuditKey, rollback_of: int | None = None) -> int:
        cursor = db.execute(
            "INSERT INTO approval_requests (incident_id, action, plan, plan_hash, dry_run, requester, reason, channel, "
            "state, required, created_at, expires_at, rollback_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
            [incident_id, plan.action, plan.canonical_json(), plan.hash, json.dumps(dry_run), requester, reason,
             channel, required, iso(now), iso(expires_at), rollback_of])
        request_id = inserted_id(cursor)
        db.execute("UPDATE approval_requests SET plan_binding = ? WHERE id = ?",
                   [bind_plan(key, plan, request_id), request_id])
        return request_id

    def set_message(self, db: sqlite_utils.Database, request_id: int, entry: int) -> None:
        db.execute("UPDATE approval_requests SET message_entry = ? WHERE id = ?", [entry, request_id])

    def get(self, db: sqlite_utils.Database, request_id: int) -> ApprovalRequest | None:
        """The request with its votes.  Inside a transaction it also locks the request until that ends
        (``Lock.REQUEST``; a no-op on SQLite): what is decided from it (a vote's verdict, a state transition, the one
        rollback) is decided by one replica at a time, while requests of other incidents go on."""
        lock_key(db, Lock.REQUEST, request_id)
        rows = list(db.query("SELECT * FROM approval_requests WHERE id = ?", [request_id]))
        if not rows:
            return None
        row = rows[0]
        approvals = tuple(r["user"] for r in db.query(
            "SELECT user FROM approval_votes WHERE request_id = ? AND vote = 'approve' ORDER BY at, rowid",
            [request_id]))
        return ApprovalRequest(
            id=row["id"], incident_id=row["incident_id"], action=row["action"],
            plan=Plan.from_dict(json.loads(row["plan"])), plan_hash=row["plan_hash"], dry_run=json.loads(row["dry_run"]),
            requester=row["requester"], reason=row["reason"], channel=row["channel"],
            message_entry=row["message_entry"], state=RequestState(row["state"]), required=row["required"],
            created_at=stored_time(row["created_at"]), expires_at=stored_time(row["expires_at"]),
            decided_by=row["decided_by"], result=_json(row["result"]), verification=_json(row["verification"]),
            rollback_of=row["rollback_of"], rolled_back_by=row["rolled_back_by"], approvals=approvals,
            plan_binding=row.get("plan_binding"))


    def require(self, db: sqlite_utils.Database, request_id: int) -> ApprovalRequest:
        """``get``, refusing an id that names no request (the user typed or clicked it)."""
        request = self.get(db, request_id)
        if request is None:
            raise UserError(f"there is no approval request #{request_id}")
        return request
    def add_vote(self, db: sqlite_utils.Database, request_id: int, user: str, vote: Vote, now: datetime) -> None:
        db.execute("INSERT OR IGNORE INTO approval_votes (request_id, user, vote, at) VALUES (?, ?, ?, ?)",
                   [request_id, user, str(vote), iso(now)])

    def transition(self, db: sqlite_utils.Database, request_id: int, from_state: RequestState,
                   to_state: RequestState, *, by: str | None = None, now: datetime) -> bool:
        """Move a request on only if it is still in ``from_state``: the exactly-once guard."""
        cursor = db.execute("UPDATE approval_requests SET state = ?, decided_by = COALESCE(?, decided_by), "
                            "decided_at = ? WHERE id = ? AND state = ?",
                            [str(to_state), by, iso(now), request_id, str(from_state)])
        return cursor.rowcount == 1

    def finish(self, db: sqlite_utils.Database, request_id: int, state: RequestState, result: dict[str, Any],
               verification: dict[str, Any] | None, *, attempt: int | None = None) -> bool:
        """Record how an execution ended; False when the request was no longer executing, or (``attempt`` given)
        another executor's claim superseded this one (nothing written)."""
        # First, this request's lock and then its original's (a rollback's outcome marks it rolled back): taken
        # before the events are appended, so never after the audit chain's lock (bot.storage.postgres).
        lock_key(db, Lock.REQUEST, request_id)
        original = db.execute("SELECT rollback_of FROM approval_requests WHERE id = ?", [request_id]).fetchone()
        if original and original[0] is not None:
            lock_key(db, Lock.REQUEST, original[0])
        cursor = db.execute("UPDATE approval_requests SET state = ?, result = ?, verification = ? WHERE id = ? "
                            "AND state = 'executing' AND attempt = COALESCE(?, attempt)",
                            [str(state), json.dumps(result), json.dumps(verification) if verification else None,
                             request_id, attempt])
        return cursor.rowcount == 1

    def restore_state(self, db: sqlite_utils.Database, request_id: int, state: RequestState) -> None:
        """Put a row back to the state the keyed log gives it (its column was edited in the database)."""
        db.execute("UPDATE approval_requests SET state = ?, executor = NULL WHERE id = ?", [str(state), request_id])

    def all_requests(self, db: sqlite_utils.Database) -> list[ApprovalRequest]:
        return [request for row in db.execute("SELECT id FROM approval_requests ORDER BY id").fetchall()
                if (request := self.get(db, row[0])) is not None]

    def mark_rolled_back(self, db: sqlite_utils.Database, request_id: int, by_request: int) -> None:
        db.execute("UPDATE approval_requests SET rolled_back_by = ? WHERE id = ?", [by_request, request_id])

    def pending_rollback_of(self, db: sqlite_utils.Database, request_id: int) -> int | None:
        row = db.execute("SELECT id FROM approval_requests WHERE rollback_of = ? AND state IN ('pending', "
                         "'executing') ORDER BY id DESC LIMIT 1", [request_id]).fetchone()
        return row[0] if row else None

    def expired_ids(self, db: sqlite_utils.Database, now: datetime) -> list[int]:
        """Pending requests past their expiry, each locked (``Lock.REQUEST``, in id order, before any is changed) and
        read again after: a click another replica decided meanwhile is no longer pending, and not expired here."""
        query = "SELECT id FROM approval_requests WHERE state = 'pending' AND expires_at <= ? ORDER BY id"
        due = [r[0] for r in db.execute(query, [iso(now)]).fetchall()]
        for request_id in due:
            lock_key(db, Lock.REQUEST, request_id)
        return [r[0] for r in db.execute(query, [iso(now)]).fetchall() if r[0] in due] if due else []

    def claim_execution(self, db: sqlite_utils.Database, request_id: int, executor: str, lease_seconds: float, *,
                        take_over_live: bool = False) -> int | None:
        """Become the request's executor unless a live one holds it (its lease not yet over on the database's
        clock); returns the claim's fencing token (the attempt number), None when another executor holds it.
        ``take_over_live``: SQLite at start-up, where whatever is executing was the previous process's.
        The database's clock is ``bot.storage.dialect.DATABASE_EPOCH``, spelled out (PostgreSQL gets its own);
        ``heartbeat_at`` is that clock too, for people to read (nothing compares it)."""
        cursor = db.execute(
            "UPDATE approval_requests SET executor = ?, attempt = attempt + 1, "
            "lease_until = ((julianday('now') - 2440587.5) * 86400.0) + ?, "
            "heartbeat_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ? AND state = 'executing' AND "
            "(executor IS NULL OR lease_until IS NULL OR lease_until < ((julianday('now') - 2440587.5) * 86400.0) "
            "OR ?)",
            [executor, lease_seconds, request_id, take_over_live])
        if cursor.rowcount != 1:
            return None
        return int(db.execute("SELECT attempt FROM approval_requests WHERE id = ?", [request_id]).fetchone()[0])

    def renew(self, db: sqlite_utils.Database, request_id: int, executor: str, attempt: int,
              lease_seconds: float) -> bool:
        """Extend the lease if the claim ``attempt`` is still the request's current one (the fencing check, in the
        caller's transaction); False: another executor took it over, or the request is no longer executing.
        A lease that ran out but nobody took over is still this holder's: the token, not the time, decides."""
        cursor = db.execute(
            "UPDATE approval_requests SET lease_until = ((julianday('now') - 2440587.5) * 86400.0) + ?, "
            "heartbeat_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') "
            "WHERE id = ? AND executor = ? AND attempt = ? AND state = 'executing'",
            [lease_seconds, request_id, executor, attempt])
        return cursor.rowcount == 1

    def release(self, db: sqlite_utils.Database, request_id: int, executor: str, attempt: int) -> bool:
        """Hand a claim back (SIGTERM): its lease ends now, so a survivor resumes the request at its next sweep."""
        cursor = db.execute("UPDATE approval_requests SET lease_until = ((julianday('now') - 2440587.5) * 86400.0) - 1 "
                            "WHERE id = ? AND executor = ? AND attempt = ? AND state = 'executing'",
                            [request_id, executor, attempt])
        return cursor.rowcount == 1

    def abandoned(self, db: sqlite_utils.Database, *, all_executing: bool = False) -> list[int]:
        """Requests left executing by an executor whose lease ran out on the database's clock (a replica that died,
        or handed them back); ``all_executing`` for SQLite's start-up, where every one was the previous process's."""
        return [r[0] for r in db.execute(
            "SELECT id FROM approval_requests WHERE state = 'executing' AND (? OR executor IS NULL OR lease_until IS "
            "NULL OR lease_until < ((julianday('now') - 2440587.5) * 86400.0)) ORDER BY id", [all_executing])]

    def executing(self, db: sqlite_utils.Database) -> list[int]:
        return [r[0] for r in db.execute("SELECT id FROM approval_requests WHERE state = 'executing' ORDER BY id")]

    def succeeded_since(self, db: sqlite_utils.Database, since: datetime) -> list[int]:
        """Executed requests opened since ``since`` that carry a verification (follow-up candidates)."""
        return [r[0] for r in db.execute("SELECT id FROM approval_requests WHERE state = 'succeeded' AND "
                                         "verification IS NOT NULL AND created_at >= ? ORDER BY id", [iso(since)])]

    def replace_verification(self, db: sqlite_utils.Database, request_id: int, expected: dict[str, Any] | None,
                             verification: dict[str, Any]) -> bool:
        """Store ``verification`` only if the stored one is still ``expected``: one follow-up across replicas."""
        lock_key(db, Lock.REQUEST, request_id)  # first: the request is read again after the follow-up's event
        cursor = db.execute("UPDATE approval_requests SET verification = ? WHERE id = ? AND verification = ?",
                            [json.dumps(verification), request_id, json.dumps(expected)])
        return cursor.rowcount == 1

    def close_deferred(self, db: sqlite_utils.Database, request_id: int, by: str, now: datetime) -> bool:
        """A pending rollback someone chose to leave for later: closed, the change stays (conditional, once)."""
        cursor = db.execute("UPDATE approval_requests SET state = 'rejected', decided_by = ?, decided_at = ?, "
                            "result = ? WHERE id = ? AND state = 'pending' AND rollback_of IS NOT NULL",
                            [by, iso(now), json.dumps(DEFERRED), request_id])
        return cursor.rowcount == 1
