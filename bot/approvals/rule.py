"""The two-person rule, as a pure function: given a request and one click, what happens?

- The requester never counts as an approver (they may withdraw their request with Reject).
- Only people in MESHBOT_APPROVERS (users, or members of a listed user group) may vote; when a group cannot be
  read, nobody's membership in it is assumed (the vote is refused as "could not check").
- The same person approving twice counts once.
- One Reject closes the request.
- A request expires MESHBOT_APPROVAL_TTL_MINUTES after it was opened.
- When the approvals of people other than the requester reach MESHBOT_REQUIRED_APPROVALS,
  the action runs — once: every later click is answered "already executed".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RequestState(StrEnum):
    PENDING = "pending"
    REJECTED = "rejected"
    EXPIRED = "expired"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Vote(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class Verdict(StrEnum):
    COUNTED = "counted"
    """An approval was added; more are needed."""
    EXECUTE = "execute"
    """This approval completed the quorum: run the action now."""
    REJECTED = "rejected"
    """This click closed the request."""
    REFUSED = "refused"
    """The click changes nothing; ``reason`` tells the person why."""


@dataclass(frozen=True)
class Ballot:
    """What the rule needs to know about a request."""

    requester: str
    state: RequestState
    required: int
    expires_at: datetime
    approvals: tuple[str, ...]
    """Slack user IDs that approved, in order."""
    decided_by: str | None = None


@dataclass(frozen=True)
class Click:
    user: str
    vote: Vote
    at: datetime
    is_approver: bool | None
    """None: an approver user group could not be read, so nobody knows (the vote is refused, not counted)."""


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    approvals: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        return self.verdict != Verdict.REFUSED


def decide(ballot: Ballot, click: Click) -> Decision:
    def refuse(reason: str) -> Decision:
        return Decision(Verdict.REFUSED, reason, ballot.approvals)

    if ballot.state == RequestState.EXECUTING:
        return refuse("this action is already being executed")
    if ballot.state in (RequestState.SUCCEEDED, RequestState.FAILED):
        return refuse("this action was already executed")
    if ballot.state == RequestState.REJECTED:
        who = f" by <@{ballot.decided_by}>" if ballot.decided_by else ""
        return refuse(f"this request was already rejected{who}")
    if ballot.state == RequestState.EXPIRED or click.at >= ballot.expires_at:
        return refuse("this request has expired; ask for the action again")
    if click.user == ballot.requester:
        if click.vote == Vote.REJECT:
            return Decision(Verdict.REJECTED, "withdrawn by the requester", ballot.approvals)
        others = "another person" if ballot.required == 1 else f"{ballot.required} other people"
        return refuse(f"you asked for this action, so your approval does not count; {others} must approve it")
    if click.is_approver is None:
        return refuse("meshbot could not check whether you are in an approver user group (Slack did not answer), "
                      "so your vote was not counted; please try again")
    if not click.is_approver:
        return refuse("you are not in MESHBOT_APPROVERS, so you cannot approve or reject actions")
    if click.vote == Vote.REJECT:
        return Decision(Verdict.REJECTED, "rejected", ballot.approvals)
    if click.user in ballot.approvals:
        return refuse("you already approved this request; the same person counts once")
    approvals = (*ballot.approvals, click.user)
    if len(approvals) >= ballot.required:
        return Decision(Verdict.EXECUTE, "approved", approvals)
    return Decision(Verdict.COUNTED, f"approval {len(approvals)} of {ballot.required}", approvals)


def is_approver(user: str, approvers: tuple[str, ...] | frozenset[str], group_members: frozenset[str]) -> bool:
    """A user is an approver when listed by ID or a member of a listed user group."""
    return user in approvers or user in group_members


# -- authority: what the keyed log says, recomputed before every execution (issue 24 item 1) --------------


@dataclass(frozen=True)
class LoggedVote:
    """An ``approval_click`` event that carries the audit key's HMAC."""

    user: str
    vote: Vote
    at: datetime
    accepted: bool


@dataclass(frozen=True)
class Grant:
    """The ``approval_granted`` event the quorum wrote: these approvers, for exactly this plan binding."""

    approvers: tuple[str, ...]
    binding: str


@dataclass(frozen=True)
class Authority:
    """What the keyed log says about one request, as opposed to what its table row says."""

    requester: str
    required: int
    """The larger of the required approvals logged when it was opened and the policy's now."""
    expires_at: datetime
    """Opened (the logged time) plus the approval TTL: a later expiry in the table is not believed."""
    binding: str | None
    """The request's plan binding (an HMAC with the audit key over its id and plan)."""
    votes: tuple[LoggedVote, ...]
    grants: tuple[Grant, ...]
    finished: bool
    """An outcome (executed or failed) is logged: the grant was used."""


def authority_refusal(authority: Authority | None) -> str | None:
    """Why the request may not execute now (None: the keyed log authorises it).

    Executing and resuming both ask: at least ``required`` distinct approvers other than the requester, before
    the expiry, no accepted reject, a single-use grant for this very plan binding that no outcome has used."""
    if authority is None:
        return "the keyed log holds no approval_requested event for it"
    if authority.finished:
        return "the keyed log already holds its outcome: a grant runs once"
    if any(v.accepted and v.vote == Vote.REJECT for v in authority.votes):
        return "the keyed log says it was rejected"
    approvers = sorted({v.user for v in authority.votes if v.accepted and v.vote == Vote.APPROVE
                        and v.user != authority.requester and v.at < authority.expires_at})
    if len(approvers) < authority.required:
        return (f"the keyed log holds {len(approvers)} approval(s) by people other than the requester before its "
                f"expiry; {authority.required} are required")
    if authority.binding is None:
        return "it has no plan binding"
    granted = [g for g in authority.grants if g.binding == authority.binding and set(g.approvers) <= set(approvers)]
    if not granted:
        return "the keyed log holds no grant for this plan binding from these approvers"
    return None
