"""Authority to execute as the keyed log gives it (``authority_refusal``): pure, no database, no Slack."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

from bot.approvals.rule import Authority, Grant, LoggedVote, Vote, authority_refusal

OPENED = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
BINDING = "b" * 64
GRANTED = (Grant(("UBOB", "UCAROL"), BINDING),)


def vote(user: str, kind: Vote = Vote.APPROVE, *, minutes: int = 1, accepted: bool = True) -> LoggedVote:
    return LoggedVote(user, kind, OPENED + timedelta(minutes=minutes), accepted)


def authority(*votes: LoggedVote, grants=GRANTED, required: int = 2,
              finished: bool = False) -> Authority:
    return Authority(requester="UALICE", required=required, expires_at=OPENED + timedelta(minutes=30),
                     binding=BINDING, votes=votes, grants=tuple(grants), finished=finished)


def test_two_logged_approvals_and_their_grant_authorise_execution():
    assert authority_refusal(authority(vote("UBOB"), vote("UCAROL"))) is None


def test_no_requested_event_means_no_authority():
    assert "no approval_requested event" in authority_refusal(None)


def test_the_requesters_own_approval_and_refused_clicks_do_not_count():
    refused = authority_refusal(authority(vote("UALICE"), vote("UBOB"), vote("UCAROL", accepted=False)))
    assert refused.startswith("the keyed log holds 1 approval(s) by people other than the requester")


def test_approvals_after_the_logged_expiry_do_not_count():
    assert "holds 1 approval(s)" in authority_refusal(authority(vote("UBOB"), vote("UCAROL", minutes=31)))


def test_an_accepted_reject_in_the_log_wins_over_any_approvals():
    refused = authority_refusal(authority(vote("UBOB"), vote("UCAROL"), vote("UDAVE", Vote.REJECT)))
    assert refused == "the keyed log says it was rejected"


def test_a_grant_runs_once():
    assert "a grant runs once" in authority_refusal(authority(vote("UBOB"), vote("UCAROL"), finished=True))


def test_a_grant_for_another_binding_or_other_approvers_does_not_authorise():
    votes = (vote("UBOB"), vote("UCAROL"))
    other_binding = authority(*votes, grants=[Grant(("UBOB", "UCAROL"), "c" * 64)])
    forged_approver = authority(*votes, grants=[Grant(("UBOB", "UMALLORY"), BINDING)])
    assert "no grant for this plan binding" in authority_refusal(other_binding)
    assert "no grant for this plan binding" in authority_refusal(forged_approver)
    assert authority_refusal(dataclasses.replace(authority(*votes), binding=None)) == "it has no plan binding"
