"""The two-person rule, as a pure function: given a request and one click, what happens?

- The requester never counts as an approver (they may withdraw their request with Reject).
- Only people in MESHBOT_APPROVERS (users, or members of a listed user group) may vote.
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
    is_approver: bool


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
