"""Authority to execute comes from the keyed incident log, not from the approval tables' columns (issue 24
item 1): a database writer who sets a request's state, required count or vote rows gets nothing executed, and
``verify`` names what was edited.  On SQLite and on PostgreSQL, against the emulated cluster."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.approvals.authority import verify_with_approvals
from bot.approvals.rule import RequestState
from bot.incidents.log import IncidentLog
from bot.slack.groups import GROUP_CACHE_SECONDS, GroupDirectory
from commands.actions.planners import EMERGENCY_POLICY
from tests.support.istiod import syncz_entry
from tests.support.kube import FakeKube, write_kubeconfig
from tests.test_actions import deployment, namespace
from tests.test_approvals import (
    APPROVERS,
    approve,
    ask,
    ask_rollback,
    created_peer_authentications,
    istiod_pod,
    press,
    wait_finished,
)

LONG_AGO = "2026-01-01T00:00:00Z"


@pytest.fixture
def authority_bot(kube: FakeKube, istiod_server, fake_slack, tmp_path, backend_settings, bot_factory):
    kube.add(namespace("payments"), namespace("istio-system"), deployment("istiod", "istio-system"),
             deployment("reviews", "payments"), istiod_pod())
    istiod_server.answer("/debug/syncz", [syncz_entry("reviews-1.payments")])
    fake_slack.usergroups = {"S0SRE": ["UDAVE"]}
    meshbot = bot_factory(scenario=None, kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", kube.url),
                          kube_context="kmock", kube_timeout=2.0, approvers=APPROVERS, required_approvals=2,
                          channel="CINCIDENT", istiod_url=istiod_server.url, **backend_settings)
    meshbot.services.approvals.effects.settle = timedelta(0)
    meshbot.services.outbox.min_post_interval = 0.0  # Slack's per-channel pacing is tests/test_outbox.py's subject
    return meshbot


def edit(meshbot, sql: str, params: list) -> None:
    """What a database writer without the audit key does (through meshbot's own connection: either backend)."""
    with meshbot.database.transaction() as db:
        db.execute(sql, params)


def resumed(meshbot, fake_slack, request_id: int) -> RequestState:
    """The sweep's (PostgreSQL) or the next start's (SQLite) resume of requests left executing, run now."""
    assert meshbot.approvals.resume_abandoned() == 1
    return fake_slack.wait_for(lambda: (state := meshbot.approvals.get(request_id).state) != RequestState.EXECUTING
                               and state, timeout=15, what=f"request #{request_id} to leave 'executing'")


def findings(meshbot) -> str:
    log = IncidentLog(meshbot.database, key=meshbot.services.incidents.key, anchor_stores=())
    report = verify_with_approvals(log)
    assert not report.intact
    return "\n".join(report.lines())


def test_a_pending_request_set_executing_in_the_database_does_not_run_and_verify_reports_it(authority_bot,
                                                                                            kube, fake_slack):
    request_id, _ = ask(authority_bot, fake_slack, "permissive-mtls payments")
    edit(authority_bot, "UPDATE approval_requests SET state = 'executing', decided_at = ? WHERE id = ?",
         [LONG_AGO, request_id])
    assert resumed(authority_bot, fake_slack, request_id) == RequestState.PENDING, "back to what the log says"
    assert created_peer_authentications(kube) == 0
    text = findings(authority_bot)
    assert f"approval request #{request_id} was executing in the database but may not execute" in text
    assert "the keyed log holds 0 approval(s) by people other than the requester" in text


def test_required_one_with_a_forged_vote_row_does_not_run(authority_bot, kube, fake_slack):
    request_id, _ = ask(authority_bot, fake_slack, "permissive-mtls payments")
    edit(authority_bot, "UPDATE approval_requests SET required = 1 WHERE id = ?", [request_id])
    edit(authority_bot, "INSERT INTO approval_votes (request_id, user, vote, at) VALUES (?, 'UDAVE', 'approve', ?)",
         [request_id, LONG_AGO])
    approve(authority_bot, fake_slack, request_id, "UBOB")  # the rule, reading the columns, says execute
    done = wait_finished(authority_bot, fake_slack, request_id)
    assert done.state == RequestState.FAILED and done.applied == 0
    assert authority_bot.database.db.execute("SELECT COUNT(*) FROM events WHERE kind = 'action_executed'"
                                             ).fetchone()[0] == 0
    assert created_peer_authentications(kube) == 0
    text = findings(authority_bot)
    assert "the keyed log holds 1 approval(s) by people other than the requester before its expiry; 2 are " \
           "required" in text
    assert f"approval request #{request_id}: vote rows of UDAVE have no accepted click in the log" in text


def test_a_rejected_request_revived_in_the_database_does_not_run(authority_bot, kube, fake_slack):
    request_id, _ = ask(authority_bot, fake_slack, "permissive-mtls payments")
    press(authority_bot, fake_slack, "approval_reject", str(request_id), "UBOB")
    edit(authority_bot, "UPDATE approval_requests SET state = 'executing', decided_at = ? WHERE id = ?",
         [LONG_AGO, request_id])
    assert resumed(authority_bot, fake_slack, request_id) == RequestState.REJECTED
    assert created_peer_authentications(kube) == 0
    assert "the keyed log says it was rejected" in findings(authority_bot)


def test_a_rolled_back_request_flipped_back_to_executing_does_not_run_again(authority_bot, kube, fake_slack):
    request_id, _ = ask(authority_bot, fake_slack, "permissive-mtls payments")
    approve(authority_bot, fake_slack, request_id, "UBOB", "UCAROL")
    assert wait_finished(authority_bot, fake_slack, request_id).state == RequestState.SUCCEEDED
    rollback_id = ask_rollback(authority_bot, fake_slack, request_id, "UBOB")
    approve(authority_bot, fake_slack, rollback_id, "UCAROL", "UDAVE")
    assert wait_finished(authority_bot, fake_slack, rollback_id).state == RequestState.SUCCEEDED
    assert kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None

    edit(authority_bot, "UPDATE approval_requests SET state = 'executing', executor = NULL, heartbeat_at = ?, "
         "rolled_back_by = NULL WHERE id = ?", [LONG_AGO, request_id])
    assert resumed(authority_bot, fake_slack, request_id) == RequestState.SUCCEEDED, "its logged outcome stands"
    assert kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None, "the grant ran once"
    assert created_peer_authentications(kube) == 1
    assert "the keyed log already holds its outcome: a grant runs once" in findings(authority_bot)


def test_an_untampered_request_runs_and_verify_finds_nothing(authority_bot, kube, fake_slack):
    request_id, _ = ask(authority_bot, fake_slack, "permissive-mtls payments")
    approve(authority_bot, fake_slack, request_id, "UBOB", "UDAVE")
    assert wait_finished(authority_bot, fake_slack, request_id).state == RequestState.SUCCEEDED
    log = IncidentLog(authority_bot.database, key=authority_bot.services.incidents.key, anchor_stores=())
    report = verify_with_approvals(log)
    assert report.intact, report.lines()


# -- approver groups fail closed (issue 24 item 4) ---------------------------------------------------------------


def test_a_vote_needing_a_group_slack_cannot_list_after_expiry_is_refused_and_audited(authority_bot, fake_slack):
    clock = [0.0]
    desk = authority_bot.approvals
    desk.groups = GroupDirectory(authority_bot.services.slack.usergroup_members, clock=lambda: clock[0])
    first, _ = ask(authority_bot, fake_slack, "permissive-mtls payments")
    assert "Approval recorded" in press(authority_bot, fake_slack, "approval_approve", str(first), "UDAVE")
    second, _ = ask(authority_bot, fake_slack, "permissive-mtls payments --reason again")
    fake_slack.usergroups = {"S0SRE": []}  # UDAVE was removed from the approvers' group...
    fake_slack.fail_next("usergroups.users.list", error="ratelimited", times=10)  # ...and Slack cannot say so
    clock[0] += GROUP_CACHE_SECONDS + 1  # the cached answer (UDAVE in S0SRE) has expired

    answer = press(authority_bot, fake_slack, "approval_approve", str(second), "UDAVE")

    assert "could not check whether you are in an approver user group" in answer
    assert authority_bot.approvals.get(second).approvals == ()
    [refused] = [e for e in IncidentLog(authority_bot.database, key=authority_bot.services.incidents.key,
                                        anchor_stores=()).timeline(authority_bot.approvals.get(second).incident_id)
                 if e.kind == "approval_click" and e.data.get("request_id") == second]
    assert refused.actor == "UDAVE" and refused.data["accepted"] is False
    assert "could not check" in refused.data["reason"]


def test_roles_and_votes_share_one_answer_per_group(authority_bot, fake_slack):
    # The start-up quorum check listed S0SRE; asking (a role: MESHBOT_APPROVERS are responders) and voting
    # (the two-person rule) both read that one answer instead of asking Slack again.
    assert len(fake_slack.of("usergroups.users.list")) == 1
    first, _ = ask(authority_bot, fake_slack, "permissive-mtls payments", user="UDAVE")
    second, _ = ask(authority_bot, fake_slack, "permissive-mtls payments --reason again")
    assert "Approval recorded" in press(authority_bot, fake_slack, "approval_approve", str(second), "UDAVE")
    assert len(fake_slack.of("usergroups.users.list")) == 1
    assert authority_bot.approvals.get(first).requester == "UDAVE"
