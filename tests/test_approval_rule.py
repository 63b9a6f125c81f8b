"""The two-person rule on its own: pure decisions, no Slack, no database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bot.approvals.rule import Ballot, Click, RequestState, Verdict, Vote, decide, is_approver

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)


def ballot(*approvals: str, state: RequestState = RequestState.PENDING, required: int = 2) -> Ballot:
    return Ballot(requester="UALICE", state=state, required=required, expires_at=NOW + timedelta(minutes=30),
                  approvals=approvals)


def click(user: str, vote: Vote = Vote.APPROVE, *, approver: bool = True, at: datetime = NOW) -> Click:
    return Click(user, vote, at, approver)


def test_the_requesters_own_approval_never_counts():
    decision = decide(ballot(), click("UALICE"))
    assert decision.verdict == Verdict.REFUSED and "you asked for this action" in decision.reason


def test_the_requester_may_withdraw_with_reject():
    assert decide(ballot(), click("UALICE", Vote.REJECT)).verdict == Verdict.REJECTED


def test_the_same_person_twice_counts_once():
    decision = decide(ballot("UBOB"), click("UBOB"))
    assert decision.verdict == Verdict.REFUSED and decision.approvals == ("UBOB",)


def test_someone_outside_the_approver_list_is_refused_for_approve_and_reject():
    for vote in Vote:
        decision = decide(ballot(), click("UMALLORY", vote, approver=False))
        assert decision.verdict == Verdict.REFUSED and "MESHBOT_APPROVERS" in decision.reason


def test_two_different_approvers_other_than_the_requester_run_the_action():
    first = decide(ballot(), click("UBOB"))
    assert first.verdict == Verdict.COUNTED and first.approvals == ("UBOB",)
    second = decide(ballot("UBOB"), click("UCAROL"))
    assert second.verdict == Verdict.EXECUTE and second.approvals == ("UBOB", "UCAROL")


def test_one_approval_is_enough_when_one_is_required():
    assert decide(ballot(required=1), click("UBOB")).verdict == Verdict.EXECUTE


def test_one_reject_closes_the_request():
    assert decide(ballot("UBOB"), click("UCAROL", Vote.REJECT)).verdict == Verdict.REJECTED


@pytest.mark.parametrize("state, reason", [
    (RequestState.EXECUTING, "already being executed"),
    (RequestState.SUCCEEDED, "already executed"),
    (RequestState.FAILED, "already executed"),
    (RequestState.REJECTED, "already rejected"),
    (RequestState.EXPIRED, "expired"),
])
def test_a_closed_request_refuses_every_click(state, reason):
    decision = decide(ballot("UBOB", state=state), click("UCAROL"))
    assert decision.verdict == Verdict.REFUSED and reason in decision.reason


def test_a_click_at_or_after_expiry_is_refused_even_before_the_sweep_marks_it():
    decision = decide(ballot(), click("UBOB", at=NOW + timedelta(minutes=30)))
    assert decision.verdict == Verdict.REFUSED and "expired" in decision.reason


def test_approvers_are_listed_users_or_members_of_a_listed_group():
    assert is_approver("UBOB", ("UBOB",), frozenset())
    assert is_approver("UDAVE", ("S0SRE",), frozenset({"UDAVE"}))
    assert not is_approver("UMALLORY", ("UBOB", "S0SRE"), frozenset({"UDAVE"}))


@pytest.mark.parametrize("required, says", [(1, "another person must approve it"),
                                            (3, "3 other people must approve it")])
def test_the_refusal_to_the_requester_names_the_configured_quorum(required, says):
    decision = decide(ballot(required=required), click("UALICE"))
    assert decision.verdict == Verdict.REFUSED
    assert says in decision.reason
