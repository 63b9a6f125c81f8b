"""Authority to execute, recomputed from the keyed incident log rather than read from table columns.

The approval tables' ``state``, ``required``, ``expires_at`` and vote rows are plain columns a database writer
can set.  Before a request executes (or resumes), its authority is rebuilt from events that carry the audit
key's HMAC where they stand in the chain: the ``approval_requested`` event (requester, required approvals, the
time that fixes its expiry), the accepted clicks, and the single-use grant the quorum wrote for the plan
binding; an outcome in the log means the grant was used.  The rule itself is pure
(``bot.approvals.rule.authority_refusal``); this module reads the log and applies a refusal: the row goes back
to the state the log says, and an audit alarm is raised (a log line, an event ``verify`` reports, a metric and
a Slack note).  The threat model is in docs/security.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlite_utils

from bot.approvals.rule import Authority, Grant, LoggedVote, RequestState, Vote, authority_refusal
from bot.approvals.store import ApprovalRequest, ApprovalStore
from bot.incidents.audit import ChainReport
from bot.incidents.log import IncidentLog
from bot.incidents.records import EventKind, stored_time

MESHBOT = "meshbot"
AUTHORITY_KINDS = tuple(str(k) for k in (EventKind.APPROVAL_REQUESTED, EventKind.APPROVAL_CLICK,
                                         EventKind.APPROVAL_STATE, EventKind.APPROVAL_GRANTED,
                                         EventKind.ACTION_EXECUTED, EventKind.ACTION_FAILED))
OUTCOMES = {str(EventKind.ACTION_EXECUTED): RequestState.SUCCEEDED, str(EventKind.ACTION_FAILED): RequestState.FAILED}


def grant(db: sqlite_utils.Database, incidents: IncidentLog, request: ApprovalRequest,
          approvers: Sequence[str]) -> int:
    """The quorum's single-use grant: these approvers, for exactly this plan binding (the event is HMAC'd)."""
    return incidents.append(db, request.incident_id, MESHBOT, EventKind.APPROVAL_GRANTED, {
        "request_id": request.id, "binding": request.plan_binding, "plan_hash": request.plan_hash,
        "approvers": sorted(set(approvers))})


def logged_events(db: sqlite_utils.Database, incidents: IncidentLog, request_id: int,
                  incident_id: int) -> list[dict[str, Any]]:
    """The request's events that carry the audit key's HMAC, in chain order."""
    return [row for row in incidents.authentic(db, incident_id, AUTHORITY_KINDS)
            if row["data"].get("request_id") == request_id]


def read_authority(events: Sequence[dict[str, Any]], request: ApprovalRequest, required: int,
                   ttl: timedelta) -> Authority | None:
    opened = next((e for e in events if e["kind"] == EventKind.APPROVAL_REQUESTED), None)
    if opened is None:
        return None
    votes = tuple(LoggedVote(e["actor"], Vote(e["data"]["vote"]), stored_time(e["at"]), bool(e["data"]["accepted"]))
                  for e in events if e["kind"] == EventKind.APPROVAL_CLICK
                  and e["data"].get("vote") in tuple(Vote) and "accepted" in e["data"])
    grants = tuple(Grant(tuple(e["data"].get("approvers") or ()), str(e["data"].get("binding")))
                   for e in events if e["kind"] == EventKind.APPROVAL_GRANTED)
    logged_required = int(opened["data"].get("required") or 0)
    return Authority(requester=opened["actor"], required=max(logged_required, required, 1),
                     expires_at=stored_time(opened["at"]) + ttl, binding=request.plan_binding, votes=votes,
                     grants=grants, finished=any(e["kind"] in OUTCOMES for e in events))


def logged_state(events: Sequence[dict[str, Any]]) -> RequestState | None:
    """The state the keyed log gives the request (None: the log never saw it opened)."""
    state = None
    for event in events:
        if event["kind"] == EventKind.APPROVAL_REQUESTED:
            state = RequestState.PENDING
        elif event["kind"] == EventKind.APPROVAL_STATE and event["data"].get("to") in tuple(RequestState):
            state = RequestState(event["data"]["to"])
        elif event["kind"] in OUTCOMES:
            state = OUTCOMES[event["kind"]]
    return state


def refusal(db: sqlite_utils.Database, incidents: IncidentLog, request: ApprovalRequest, required: int,
            ttl: timedelta) -> str | None:
    """Why the request may not execute now, from the keyed log (None: it may).  Whether the stored plan is the
    bound one is the desk's next check (it records why the run failed); here the grant must name that binding."""
    events = logged_events(db, incidents, request.id, request.incident_id)
    return authority_refusal(read_authority(events, request, required, ttl))


def refuse(db: sqlite_utils.Database, incidents: IncidentLog, store: ApprovalStore, request: ApprovalRequest,
           reason: str) -> RequestState:
    """Put the row back where the keyed log says it is and raise an audit alarm; returns that state."""
    events = logged_events(db, incidents, request.id, request.incident_id)
    state = logged_state(events) or RequestState.REJECTED
    if state == RequestState.EXECUTING:
        # The log saw the switch to executing but the authority does not hold (e.g. the grant's approvers are not
        # the logged ones): end it as failed, in the table and in the log, so nothing resumes it.
        state = RequestState.FAILED
        result = {"ok": False, "applied": 0, "error": f"no authority to execute: {reason}; nothing was run"}
        store.finish(db, request.id, state, result, None)
        incidents.append(db, request.incident_id, MESHBOT, EventKind.ACTION_FAILED, {
            "request_id": request.id, "action": request.action, "plan_hash": request.plan_hash, **result})
    store.restore_state(db, request.id, state)
    incidents.alarm(f"approval request #{request.id} was {request.state} in the database but may not execute: "
                    f"{reason}; nothing was run and the row is back to {state} (its columns were edited)",
                    db=db, incident_id=request.incident_id)
    return state


def request_findings(incidents: IncidentLog, store: ApprovalStore) -> list[str]:
    """Approval rows that disagree with the keyed log, for ``meshbot incidents verify``."""
    findings = []
    db = incidents.database.db
    for request in store.all_requests(db):
        events = logged_events(db, incidents, request.id, request.incident_id)
        state = logged_state(events)
        if state is not None and state != request.state:
            findings.append(f"approval request #{request.id}: state is '{request.state}' in the table but "
                            f"{str(state)!r} in the log (edited in the database)")
        if request.state in (RequestState.EXECUTING, RequestState.SUCCEEDED, RequestState.FAILED) and not any(
                e["kind"] == EventKind.APPROVAL_GRANTED for e in events):
            findings.append(f"approval request #{request.id} is '{request.state}' but the log holds no grant for it")
        logged_approvals = {e["actor"] for e in events if e["kind"] == EventKind.APPROVAL_CLICK
                            and e["data"].get("vote") == Vote.APPROVE and e["data"].get("accepted")}
        forged = sorted(set(request.approvals) - logged_approvals)
        if forged:
            findings.append(f"approval request #{request.id}: vote rows of {', '.join(forged)} have no accepted "
                            "click in the log (inserted in the database)")
    return findings


def verify_with_approvals(incidents: IncidentLog, store: ApprovalStore | None = None) -> ChainReport:
    """``meshbot incidents verify``: the chain and its anchors, then the approval rows against the keyed log."""
    report = incidents.verify()
    if report.wrong_key or report.broken_at is not None:
        return report  # nothing below can be trusted (or read) with a broken chain or the wrong key
    return dataclasses.replace(report, findings=(*report.findings, *request_findings(incidents,
                                                                                       store or ApprovalStore())))
