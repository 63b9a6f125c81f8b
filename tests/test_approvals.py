"""Two-person approval end to end: signed /mesh commands and block_actions over HTTP, kmock's API server,
the fake Slack Web API, and the incident log."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from bot.approvals.rule import RequestState
from bot.incidents.log import IncidentLog
from bot.incidents.records import Event
from commands.actions.planners import EMERGENCY_POLICY
from tests.support.bot import quiesce, threads_left
from tests.support.istiod import FakeIstiod, syncz_entry
from tests.support.kube import FakeKube, write_kubeconfig
from tests.support.slack import FakeSlack, block_action_body, post_signed, slash_command_body
from tests.test_actions import deployment, namespace, peer_authentication

APPROVERS = ("UBOB", "UCAROL", "S0SRE")
ASK_TIMEOUT = 30.0
_answer_names = itertools.count(1)


def istiod_pod(*, oom_killed: bool = False) -> dict:
    """istiod's pod as the Deployment controller leaves it: Ready, or OOMKilled and not Ready."""
    status = {"name": "discovery", "ready": not oom_killed, "restartCount": 7 if oom_killed else 0,
              "state": {"waiting": {"reason": "CrashLoopBackOff"}} if oom_killed else {"running": {}}}
    if oom_killed:
        status["lastState"] = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "istiod-5d8f7c9b6-qx7wz", "namespace": "istio-system", "labels": {"app": "istiod"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": "istiod-5d8f7c9b6", "uid": "rs-istiod"}]},
            "spec": {"containers": [{"name": "discovery", "resources": {"limits": {"memory": "2Gi"}}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": str(not oom_killed)}],
                       "containerStatuses": [status]}}


@pytest.fixture
def cluster(kube: FakeKube) -> FakeKube:
    kube.add(namespace("payments"), namespace("istio-system"), deployment("istiod", "istio-system"),
             deployment("reviews", "payments"), deployment("api", "payments"), istiod_pod())
    return kube


@pytest.fixture
def istiod(istiod_server: FakeIstiod) -> FakeIstiod:
    """istiod's debug port with one synced proxy in payments (MESHBOT_ISTIOD_URL points at it)."""
    istiod_server.answer("/debug/syncz", [syncz_entry("reviews-1.payments")])
    return istiod_server


@pytest.fixture
def action_bot(bot_factory, cluster, istiod, fake_slack, tmp_path, backend_settings):
    """A bot that acts on the emulated cluster, on SQLite and then on PostgreSQL."""
    def start(**overrides):
        config = write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
        settings = dict(scenario=None, kubeconfig=config, kube_context="kmock", kube_timeout=5.0,
                        approvers=APPROVERS, required_approvals=2, channel="CINCIDENT", istiod_url=istiod.url,
                        **backend_settings)
        settings.update(overrides)
        meshbot = bot_factory(**settings)
        # The first look after execution polls for the push to be acknowledged; the fake istiod's answers only
        # change when a test programs them, so a test that wants the wait sets it itself.
        meshbot.services.approvals.effects.settle = timedelta(0)
        # Slack's one post per second per channel is tests/test_outbox.py's subject; here it only made each card wait.
        meshbot.services.outbox.min_post_interval = 0.0
        return meshbot
    fake_slack.usergroups = {"S0SRE": ["UDAVE"]}
    return start


@pytest.fixture
def sqlite_action_bot(bot_factory, cluster, istiod, fake_slack, tmp_path):
    """``action_bot`` on SQLite only: for tests that edit the database file behind meshbot's back."""
    def start(**overrides):
        config = write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
        settings = dict(scenario=None, kubeconfig=config, kube_context="kmock", kube_timeout=5.0,
                        approvers=APPROVERS, required_approvals=2, channel="CINCIDENT", istiod_url=istiod.url)
        settings.update(overrides)
        meshbot = bot_factory(**settings)
        meshbot.services.approvals.effects.settle = timedelta(0)
        meshbot.services.outbox.min_post_interval = 0.0
        return meshbot
    fake_slack.usergroups = {"S0SRE": ["UDAVE"]}
    return start


def ask(meshbot, fake_slack: FakeSlack, text: str, user: str = "UALICE") -> tuple[int, str]:
    """Type ``/mesh text``; returns (request id, name of the asker's private answers)."""
    name = f"ask{next(_answer_names)}"
    body = slash_command_body(text, user_id=user, response_url=fake_slack.response_url(name))
    assert post_signed(f"{meshbot.url}/slack/events", body).status_code == 200
    # Asking plans, runs a diagnosis for the preconditions and dry-runs: allow for a loaded machine.
    answer = fake_slack.wait_for(lambda: fake_slack.answers_to(name), timeout=ASK_TIMEOUT,
                                 what=f"the answer to /mesh {text}")[0]
    assert "Request #" in answer, answer
    request_id = int(answer.split("Request #", 1)[1].split()[0])
    request_message(fake_slack, request_id)
    return request_id, name


def request_message(fake_slack: FakeSlack, request_id: int) -> dict:
    def posted():
        return [m for m in fake_slack.messages() if f"request #{request_id}:" in m.get("text", "")]
    return fake_slack.wait_for(posted, what=f"request #{request_id} in the thread")[0]


def updates_of(fake_slack: FakeSlack, message: dict) -> list[str]:
    return [c.args["text"] for c in fake_slack.of("chat.update")
            if c.args.get("_ok") and c.args.get("ts") == message["_ts"]]


def press(meshbot, fake_slack: FakeSlack, action_id: str, value: str, user: str, timeout: float = 10.0) -> str:
    """Press a button as ``user``; returns what meshbot told them privately."""
    name = f"click{next(_answer_names)}"
    body = block_action_body(action_id, value, user_id=user, response_url=fake_slack.response_url(name))
    assert post_signed(f"{meshbot.url}/slack/events", body).status_code == 200
    return fake_slack.wait_for(lambda: fake_slack.answers_to(name), timeout=timeout,
                               what=f"the answer to {user}'s click")[0]


def approve(meshbot, fake_slack: FakeSlack, request_id: int, *users: str) -> list[str]:
    return [press(meshbot, fake_slack, "approval_approve", str(request_id), user) for user in users]


def ask_rollback(meshbot, fake_slack: FakeSlack, request_id: int, user: str) -> int:
    """Press Rollback on a finished request; returns the new (rollback) request's number."""
    answer = press(meshbot, fake_slack, "approval_rollback", str(request_id), user)
    return int(answer.split("#", 1)[1].split()[0])


def request_state(meshbot, request_id: int) -> RequestState:
    return meshbot.approvals.get(request_id).state


def wait_finished(meshbot, fake_slack: FakeSlack, request_id: int, timeout: float = 15.0):
    return fake_slack.wait_for(
        lambda: (r := meshbot.approvals.get(request_id)).state in (RequestState.SUCCEEDED, RequestState.FAILED)
        and r, timeout=timeout, what=f"request #{request_id} to finish")


def events(meshbot, incident_id: int) -> list:
    return IncidentLog(meshbot.database).timeline(incident_id)


def created_peer_authentications(kube: FakeKube) -> int:
    return len([r for r in kube.requests("POST") if "peerauthentications" in r.url.path
                and r.params.get("dryRun") != "All"])


# -- the whole flow --------------------------------------------------------------------------


def test_permissive_mtls_runs_after_two_other_people_approve_and_the_thread_and_log_show_who_did_what(
        action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments --reason 503s after root rotation")
    message = request_message(fake_slack, request_id)
    assert "Waiting for approval* \u2014 0/2" in str(message["blocks"])
    assert "Server-side dry run: passed" in str(message["blocks"])
    assert cluster.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None, "nothing changes yet"

    assert "your approval does not count" in press(meshbot, fake_slack, "approval_approve", str(request_id), "UALICE")
    assert "Approval recorded" in press(meshbot, fake_slack, "approval_approve", str(request_id), "UBOB")
    assert cluster.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None
    assert "running now" in press(meshbot, fake_slack, "approval_approve", str(request_id), "UCAROL")

    done = wait_finished(meshbot, fake_slack, request_id)
    assert done.state == RequestState.SUCCEEDED and done.verification["ok"]
    assert cluster.object("PeerAuthentication", "payments", EMERGENCY_POLICY)["spec"]["mtls"]["mode"] == "PERMISSIVE"
    fake_slack.wait_for(lambda: any("succeeded" in t for t in updates_of(fake_slack, message)), what="done update")
    steps = updates_of(fake_slack, message)
    assert [s.rsplit("\u2014 ", 1)[1] for s in steps] == ["pending", "executing", "succeeded"]
    assert press(meshbot, fake_slack, "approval_approve", str(request_id), "UDAVE").endswith(
        "this action was already executed.")

    timeline = events(meshbot, done.incident_id)
    kinds = [e.kind for e in timeline]
    for kind in ("approval_requested", "approval_click", "approval_state", "action_executed", "action_verified"):
        assert kind in kinds
    clicks = [(e.actor, e.data["accepted"]) for e in timeline if e.kind == "approval_click"]
    assert clicks == [("UALICE", False), ("UBOB", True), ("UCAROL", True), ("UDAVE", False)]
    executed = next(e for e in timeline if e.kind == "action_executed")
    assert executed.data["approved_by"] == ["UBOB", "UCAROL"] and executed.data["plan_hash"] == done.plan_hash
    assert meshbot.services.incidents.verify().intact  # with the bot's own audit key (MESHBOT_AUDIT_KEY on PostgreSQL)


def test_rollback_is_a_new_request_under_the_same_rule_and_restores_the_cluster(action_bot, cluster, fake_slack):
    cluster.add(peer_authentication("default", "payments", "STRICT"))
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    press(meshbot, fake_slack, "approval_approve", str(request_id), "UBOB")
    press(meshbot, fake_slack, "approval_approve", str(request_id), "UDAVE")  # a member of the approver group
    wait_finished(meshbot, fake_slack, request_id)
    assert cluster.object("PeerAuthentication", "payments", "default")["spec"]["mtls"]["mode"] == "PERMISSIVE"

    answer = press(meshbot, fake_slack, "approval_rollback", str(request_id), "UBOB")
    rollback_id = int(answer.split("Rollback request #", 1)[1].split()[0])
    assert "already requested" in press(meshbot, fake_slack, "approval_rollback", str(request_id), "UCAROL")
    assert "your approval does not count" in press(meshbot, fake_slack, "approval_approve", str(rollback_id),
                                                   "UBOB")
    approve(meshbot, fake_slack, rollback_id, "UCAROL", "UDAVE")
    assert wait_finished(meshbot, fake_slack, rollback_id).state == RequestState.SUCCEEDED
    assert cluster.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None
    assert cluster.object("PeerAuthentication", "payments", "default")["spec"]["mtls"]["mode"] == "STRICT"
    assert meshbot.approvals.get(request_id).rolled_back_by == rollback_id


@pytest.mark.parametrize("text, check", [
    ("bypass reviews -n payments",
     lambda kube: kube.object("Deployment", "payments", "reviews")["spec"]["template"]["metadata"]["labels"]
     .get("sidecar.istio.io/inject")),
    ("bypass namespace payments",
     lambda kube: kube.object("Namespace", None, "payments")["metadata"]["labels"].get("istio-injection")),
])
def test_bypass_approve_execute_verify_rollback(action_bot, cluster, fake_slack, text, check):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, text)
    before = check(cluster)
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    assert wait_finished(meshbot, fake_slack, request_id).verification["ok"]
    assert check(cluster) in ("false", "disabled")

    rollback_id = ask_rollback(meshbot, fake_slack, request_id, "UCAROL")
    approve(meshbot, fake_slack, rollback_id, "UBOB", "UDAVE")
    assert wait_finished(meshbot, fake_slack, rollback_id).state == RequestState.SUCCEEDED
    assert check(cluster) == before


def test_restart_istiod_is_stamped_like_kubectl_and_offers_no_rollback(action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "restart istiod")
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    done = wait_finished(meshbot, fake_slack, request_id)
    annotations = cluster.object("Deployment", "istio-system", "istiod")["spec"]["template"]["metadata"][
        "annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    message = request_message(fake_slack, request_id)
    fake_slack.wait_for(lambda: any("succeeded" in t for t in updates_of(fake_slack, message)), what="done update")
    last = [c.args for c in fake_slack.of("chat.update") if c.args.get("ts") == message["_ts"]][-1]
    assert "approval_rollback" not in last["blocks"] and done.state == RequestState.SUCCEEDED
    assert "has no rollback" in press(meshbot, fake_slack, "approval_rollback", str(request_id), "UBOB")


# -- the guarantees ------------------------------------------------------------------------------


def test_twenty_concurrent_approvals_execute_the_action_exactly_once(action_bot, cluster, fake_slack):
    people = tuple(f"UAPPROVER{i:02d}" for i in range(20))
    meshbot = action_bot(approvers=people)
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda user: press(meshbot, fake_slack, "approval_approve", str(request_id), user),
                                people))
    wait_finished(meshbot, fake_slack, request_id)
    assert created_peer_authentications(cluster) == 1
    assert sum("running now" in a for a in answers) == 1
    assert sum("Approval recorded" in a for a in answers) == 1
    assert all("already" in a for a in answers if "running now" not in a and "Approval recorded" not in a)
    executed = [e for e in events(meshbot, meshbot.approvals.get(request_id).incident_id)
                if e.kind == "action_executed"]
    assert len(executed) == 1


def test_a_request_already_executing_is_not_run_a_second_time(action_bot, cluster, fake_slack):
    # At start-up meshbot resumes requests left 'executing'; a click completing the quorum at that moment
    # must not make the same request run twice.
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    cluster.slow("PeerAuthentication", 1.0, verb="create", namespace="payments")
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    fake_slack.wait_for(lambda: created_peer_authentications(cluster) == 1, what="the first run's write")

    second = meshbot.approvals.execute(request_id)  # a second run while the first is still writing

    assert second.state == RequestState.EXECUTING, "the second run returned at once, leaving it to the first"
    assert wait_finished(meshbot, fake_slack, request_id).state == RequestState.SUCCEEDED
    assert created_peer_authentications(cluster) == 1


def test_two_people_pressing_rollback_at_once_open_one_rollback_request(action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    wait_finished(meshbot, fake_slack, request_id)
    # A slow dry run of the rollback: every press has checked for an earlier rollback before any is stored.
    cluster.slow("PeerAuthentication", 0.5, verb="delete", namespace="payments")

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda user: press(meshbot, fake_slack, "approval_rollback", str(request_id), user),
                                ["UBOB", "UCAROL", "UDAVE", "UALICE"]))

    assert sum("Rollback request #" in a for a in answers) == 1, answers
    assert sum("already requested" in a for a in answers) == 3, answers


def test_an_unexpected_error_while_executing_ends_the_request_as_failed_not_stuck(action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")

    def broken_cluster_client():
        raise RuntimeError("a bug, not an API error")
    meshbot.approvals.kube = broken_cluster_client  # the desk's injected client factory

    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    failed = wait_finished(meshbot, fake_slack, request_id)
    assert failed.state == RequestState.FAILED and "internal error" in failed.result["error"]
    assert failed.applied == 1, "unknown how far it got: the rollback must cover every change"
    message = request_message(fake_slack, request_id)
    fake_slack.wait_for(lambda: any("failed" in t for t in updates_of(fake_slack, message)), what="failed update")


def test_the_same_person_twice_counts_once_and_non_approvers_are_refused(action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    press(meshbot, fake_slack, "approval_approve", str(request_id), "UBOB")
    assert "counts once" in press(meshbot, fake_slack, "approval_approve", str(request_id), "UBOB")
    assert "not in MESHBOT_APPROVERS" in press(meshbot, fake_slack, "approval_approve", str(request_id), "UMALLORY")
    assert "not in MESHBOT_APPROVERS" in press(meshbot, fake_slack, "approval_reject", str(request_id), "UMALLORY")
    assert request_state(meshbot, request_id) == RequestState.PENDING
    assert meshbot.approvals.get(request_id).approvals == ("UBOB",)


def test_one_reject_closes_the_request_and_later_approvals_are_refused(action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    press(meshbot, fake_slack, "approval_approve", str(request_id), "UBOB")
    assert "closed" in press(meshbot, fake_slack, "approval_reject", str(request_id), "UCAROL")
    assert "already rejected by <@UCAROL>" in press(meshbot, fake_slack, "approval_approve", str(request_id), "UDAVE")
    assert request_state(meshbot, request_id) == RequestState.REJECTED
    assert created_peer_authentications(cluster) == 0


def test_an_expired_request_cannot_be_approved(action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    press(meshbot, fake_slack, "approval_approve", str(request_id), "UBOB")
    later = meshbot.approvals.get(request_id).expires_at + timedelta(seconds=1)
    meshbot.approvals.clock = lambda: later
    assert "expired" in press(meshbot, fake_slack, "approval_approve", str(request_id), "UCAROL")
    assert request_state(meshbot, request_id) == RequestState.EXPIRED
    assert created_peer_authentications(cluster) == 0


def test_the_sweep_closes_expired_requests_and_says_so_in_the_thread(action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "restart istiod")
    later = meshbot.approvals.get(request_id).expires_at
    meshbot.approvals.clock = lambda: later
    assert meshbot.approvals.expire_due() == 1
    fake_slack.wait_for(lambda: any("expired" in m["text"] for m in fake_slack.messages()), what="expiry note")


def test_pending_requests_survive_a_restart_and_still_work(action_bot, cluster, fake_slack):
    first = action_bot()
    request_id, _ = ask(first, fake_slack, "permissive-mtls payments")
    press(first, fake_slack, "approval_approve", str(request_id), "UBOB")
    first.stop()

    second = action_bot()
    assert "counts once" in press(second, fake_slack, "approval_approve", str(request_id), "UBOB")
    press(second, fake_slack, "approval_approve", str(request_id), "UCAROL")
    assert wait_finished(second, fake_slack, request_id).state == RequestState.SUCCEEDED
    assert created_peer_authentications(cluster) == 1


def test_what_runs_is_the_stored_plan_bound_to_its_hash(sqlite_action_bot, cluster, fake_slack, tmp_path):
    meshbot = sqlite_action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    with sqlite3.connect(tmp_path / "meshbot.db") as db:  # someone edits the stored plan behind meshbot's back
        db.execute("UPDATE approval_requests SET plan = replace(plan, 'payments', 'kube-system') WHERE id = ?",
                   [request_id])
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    done = wait_finished(meshbot, fake_slack, request_id)
    assert done.state == RequestState.FAILED and "does not match its hash" in done.result["error"]
    assert created_peer_authentications(cluster) == 0


@pytest.mark.parametrize("value, answer", [
    ("1; DROP TABLE approval_requests", "malformed"),
    ("999", "no approval request #999"),
])
def test_a_forged_button_value_changes_nothing_and_is_logged_as_refused(action_bot, fake_slack, value, answer):
    meshbot = action_bot()
    assert answer in press(meshbot, fake_slack, "approval_approve", value, "UBOB")
    [refused] = unattached_events(meshbot, "approval_click")
    assert refused.actor == "UBOB" and refused.data["accepted"] is False and answer in refused.data["reason"]
    assert refused.data["value"] == value


def test_a_button_pressed_outside_the_allowed_channels_is_refused_and_logged(action_bot, cluster, fake_slack):
    meshbot = action_bot(allowed_channels=("CINCIDENT",))
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    name = f"click{next(_answer_names)}"
    body = block_action_body("approval_approve", str(request_id), user_id="UBOB", channel_id="CELSEWHERE",
                             response_url=fake_slack.response_url(name))
    assert post_signed(f"{meshbot.url}/slack/events", body).status_code == 200
    assert "only answers in" in fake_slack.wait_for(lambda: fake_slack.answers_to(name), what="the refusal")[0]

    incident_id = meshbot.approvals.get(request_id).incident_id
    refused = fake_slack.wait_for(lambda: [e for e in events(meshbot, incident_id) if e.kind == "approval_click"],
                                  what="the refused click in the log")
    assert refused[0].actor == "UBOB" and not refused[0].data["accepted"]
    assert meshbot.approvals.get(request_id).approvals == ()


def unattached_events(meshbot, kind: str) -> list:
    """Events that belong to no incident (what could not be tied to a request)."""
    rows = meshbot.database.db.query("SELECT * FROM events WHERE incident_id IS NULL AND kind = ? ORDER BY id", [kind])
    return [Event.from_row(r) for r in rows]


def test_an_api_error_mid_way_is_a_failed_action_whose_rollback_undoes_what_landed(action_bot, cluster, fake_slack):
    cluster.add(namespace("payments", {"istio-injection": "enabled"}))
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "bypass namespace payments")
    cluster.fail("Deployment", 403, verb="patch", namespace="payments", name="reviews")
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    failed = wait_finished(meshbot, fake_slack, request_id)
    assert failed.state == RequestState.FAILED and "forbidden" in failed.result["error"]
    assert failed.applied == 2  # the namespace label and Deployment api; reviews was refused
    timeline = events(meshbot, failed.incident_id)
    assert any(e.kind == "action_failed" and e.data["request_id"] == request_id for e in timeline)

    rollback_id = ask_rollback(meshbot, fake_slack, request_id, "UBOB")
    approve(meshbot, fake_slack, rollback_id, "UCAROL", "UDAVE")
    assert wait_finished(meshbot, fake_slack, rollback_id).state == RequestState.SUCCEEDED
    assert cluster.object("Namespace", None, "payments")["metadata"]["labels"]["istio-injection"] == "enabled"


@pytest.mark.parametrize("text, complaint", [
    ("restart ghost -n payments", "no Deployment ghost"),
    ("permissive-mtls nowhere", "namespace nowhere does not exist"),
])
def test_unknown_targets_are_explained_to_the_asker_and_open_nothing(action_bot, fake_slack, text, complaint):
    meshbot = action_bot()
    name = "bad-target"
    post_signed(f"{meshbot.url}/slack/events",
                slash_command_body(text, user_id="UALICE", response_url=fake_slack.response_url(name)))
    answer = fake_slack.wait_for(lambda: fake_slack.answers_to(name), what="the refusal")[0]
    assert complaint in answer
    assert fake_slack.messages() == []


def test_forbidden_planning_names_the_missing_permission(action_bot, cluster, fake_slack):
    cluster.fail("PeerAuthentication", 403)
    meshbot = action_bot()
    name = "forbidden"
    post_signed(f"{meshbot.url}/slack/events", slash_command_body(
        "permissive-mtls payments", user_id="UALICE", response_url=fake_slack.response_url(name)))
    answer = fake_slack.wait_for(lambda: fake_slack.answers_to(name), what="the refusal")[0]
    assert "needs RBAC list on peerauthentications.security.istio.io" in answer


def test_a_plan_the_api_server_refuses_in_the_dry_run_is_not_put_to_a_vote(action_bot, cluster, fake_slack):
    cluster.fail("PeerAuthentication", 403, verb="create", namespace="payments")
    meshbot = action_bot()
    name = "dry-run-refused"
    post_signed(f"{meshbot.url}/slack/events", slash_command_body(
        "permissive-mtls payments", user_id="UALICE", response_url=fake_slack.response_url(name)))
    answer = fake_slack.wait_for(lambda: fake_slack.answers_to(name), what="the refusal")[0]
    assert "dry run failed" in answer and "needs RBAC create on peerauthentications" in answer
    assert fake_slack.messages() == []


def test_a_forged_signature_on_a_button_press_is_refused_and_nothing_is_counted(action_bot, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    body = block_action_body("approval_approve", str(request_id), user_id="UBOB")
    response = post_signed(f"{meshbot.url}/slack/events", body, secret="not-the-signing-secret")
    assert response.status_code == 401
    assert meshbot.approvals.get(request_id).approvals == ()


def test_a_playbook_suggestion_button_opens_a_request_in_the_incident_thread(action_bot, cluster, fake_slack):
    import yaml

    from tests.test_incidents import TOKEN, send, wait_for_diagnostics
    from tests.test_status import pod

    cluster.add(next(yaml.safe_load_all(pod("istiod-5d9f-1", "istio-system", labels="{app: istiod}", container="discovery",
                                   ready=False, restarts=12, state="{waiting: {reason: CrashLoopBackOff}}"))))
    meshbot = action_bot(alertmanager_token=TOKEN)
    alert = {"status": "firing", "labels": {"alertname": "IstiodDown", "namespace": "istio-system",
                                            "severity": "critical"},
             "annotations": {"summary": "istiod is down"}, "startsAt": "2026-11-23T03:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph", "fingerprint": "f1"}
    assert send(meshbot, {"version": "4", "groupKey": "{}:{alertname=\"IstiodDown\"}", "status": "firing",
                          "receiver": "meshbot", "groupLabels": {"alertname": "IstiodDown"},
                          "commonLabels": alert["labels"], "commonAnnotations": {}, "externalURL": "http://am",
                          "truncatedAlerts": 0, "alerts": [alert]}).status_code == 200
    top = fake_slack.wait_for(lambda: fake_slack.messages(top_level=True), what="the incident message")[0]
    diagnostics = wait_for_diagnostics(fake_slack, top)
    button = next(e for b in diagnostics["blocks"] if b["type"] == "actions" for e in b["elements"]
                  if e["action_id"].startswith("remediation_request"))
    assert "restart istiod -n istio-system" in button["text"]["text"]
    incident_id, index = button["value"].split(":")

    answer = press(meshbot, fake_slack, button["action_id"], button["value"], "UALICE")
    request_id = int(answer.split("Request #", 1)[1].split()[0])
    message = request_message(fake_slack, request_id)
    assert message["thread_ts"] == top["_ts"], "the request goes in the incident's thread"
    request = meshbot.approvals.get(request_id)
    assert request.incident_id == int(incident_id) and request.action == "restart istiod -n istio-system"
    assert request.requester == "UALICE" and "suggested by the playbook" in request.reason


# -- the request message, the quorum, and what the incident shows -------------------------------------


def latest_blocks(fake_slack: FakeSlack, message: dict) -> list[dict]:
    updates = [c.args for c in fake_slack.of("chat.update") if c.args.get("_ok") and c.args.get("ts") == message["_ts"]]
    return updates[-1]["blocks"] if updates else message["blocks"]


def button(blocks: list[dict], action_id: str) -> dict:
    return next(e for b in blocks if b["type"] == "actions" for e in b["elements"] if e["action_id"] == action_id)


def test_request_message_puts_status_asker_change_and_buttons_above_the_diff_and_mentions_approvers(
        action_bot, cluster, fake_slack):
    meshbot = action_bot(required_approvals=3)
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments --reason 503s after root rotation")
    blocks = request_message(fake_slack, request_id)["blocks"]
    first = blocks[0]["text"]["text"]
    assert first.index("Waiting for approval* \u2014 0/3") < first.index("Asked by <@UALICE>: 503s after root rotation")
    assert "*Changes:* " in first
    assert "*Approvers:* <@UBOB>, <@UCAROL>, <!subteam^S0SRE> \u2014 3 approvals from people other than the " \
           "requester" in first
    assert blocks[1]["type"] == "actions", "the buttons come before the diff"
    assert any(b.get("text", {}).get("text", "").startswith("*Diff") for b in blocks[2:])
    assert "two" not in str(blocks)
    assert button(blocks, "approval_approve")["confirm"]["text"]["text"].startswith("This is approval 1 of 3")
    reject = button(blocks, "approval_reject")["confirm"]
    assert reject["title"]["text"] == "Reject this request?" and "nothing changes" in reject["text"]["text"]


def test_with_a_quorum_of_3_the_last_approver_is_told_the_action_runs_now(action_bot, cluster, fake_slack):
    meshbot = action_bot(required_approvals=3)
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    message = request_message(fake_slack, request_id)
    assert "Approval recorded (approval 1 of 3)" in press(meshbot, fake_slack, "approval_approve", str(request_id),
                                                          "UBOB")
    press(meshbot, fake_slack, "approval_approve", str(request_id), "UCAROL")
    confirm = fake_slack.wait_for(lambda: "2/3" in str(latest_blocks(fake_slack, message)) and button(
        latest_blocks(fake_slack, message), "approval_approve")["confirm"], what="the request at 2 of 3")
    assert confirm["title"]["text"] == "Approve and run now?"
    assert confirm["text"]["text"].startswith("Yours is the last approval needed: meshbot runs `/mesh permissive-mtls")
    assert "running now" in press(meshbot, fake_slack, "approval_approve", str(request_id), "UDAVE")
    assert wait_finished(meshbot, fake_slack, request_id).state == RequestState.SUCCEEDED


def test_a_quorum_larger_than_the_approver_list_is_refused_at_start(action_bot, cluster, fake_slack):
    from bot.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="MESHBOT_REQUIRED_APPROVALS is 3 but MESHBOT_APPROVERS lists only 2 "
                                            "users"):
        Settings(approvers=("UBOB", "UCAROL"), required_approvals=3)
    # A user group counts by its members, read from Slack at start-up: UBOB, UCAROL and UDAVE make 3, not 4.
    running = set(threading.enumerate())
    with pytest.raises(SettingsError, match="lists only 2 users and 1 user-group member"):
        action_bot(required_approvals=4)
    # The refused start leaves nothing behind: no HTTP server, outbox or incident processor still running.
    assert threads_left(running) == []


def test_an_executed_action_shows_in_the_incident_top_message_until_it_is_rolled_back(action_bot, cluster,
                                                                                     fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    top = fake_slack.wait_for(lambda: fake_slack.messages(top_level=True), what="the manual incident")[0]
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    wait_finished(meshbot, fake_slack, request_id)
    shown = fake_slack.wait_for(lambda: "accepts plaintext" in str(latest_blocks(fake_slack, top))
                                and latest_blocks(fake_slack, top), what="the change in the top message")
    assert ":warning: *payments accepts plaintext since <!date^" in shown[0]["text"]["text"]
    assert button(shown, "approval_rollback:1")["value"] == str(request_id)
    assert IncidentLog(meshbot.database).get(1).status == "open", "open while the change is in place"

    rollback_id = ask_rollback(meshbot, fake_slack, request_id, "UBOB")
    approve(meshbot, fake_slack, rollback_id, "UCAROL", "UDAVE")
    wait_finished(meshbot, fake_slack, rollback_id)
    final = fake_slack.wait_for(lambda: "Closed" in str(latest_blocks(fake_slack, top))
                                and latest_blocks(fake_slack, top), what="the incident closed")
    assert "accepts plaintext" not in str(final)
    assert "Resolved" not in str(final), "rolling back is no \u2714 Resolved (issue 27)"
    original = fake_slack.wait_for(lambda: "Rolled back" in str(latest_blocks(fake_slack, request_message(
        fake_slack, request_id))) and latest_blocks(fake_slack, request_message(fake_slack, request_id)),
        what="the first request's final state")
    assert f"*Rolled back* by request #{rollback_id}" in str(original)
    assert IncidentLog(meshbot.database).get(1).status == "resolved"


def test_a_rejected_request_typed_outside_any_incident_closes_its_incident(action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    assert "closed" in press(meshbot, fake_slack, "approval_reject", str(request_id), "UCAROL")
    fake_slack.wait_for(lambda: IncidentLog(meshbot.database).get(1).status == "resolved", what="the manual incident closed")
    quiesce(meshbot)
    top = fake_slack.messages(top_level=True)[0]
    shown = str(latest_blocks(fake_slack, top)) + str(fake_slack.messages(thread_ts=top["_ts"]))
    assert "Closed" in shown and "Resolved" not in shown and "white_check_mark" not in shown, \
        "rejecting a fix resolves nothing (issue 27)"
    assert "Opened by slack" not in shown


def typed(meshbot, fake_slack: FakeSlack, text: str, user: str) -> str:
    """Type ``/mesh text`` as ``user``; returns what meshbot told them privately."""
    name = f"typed{next(_answer_names)}"
    body = slash_command_body(text, user_id=user, response_url=fake_slack.response_url(name))
    assert post_signed(f"{meshbot.url}/slack/events", body).status_code == 200
    return fake_slack.wait_for(lambda: fake_slack.answers_to(name), what=f"the answer to /mesh {text}")[0]


def test_approve_and_rollback_typed_as_text_follow_the_two_person_rule_of_the_buttons(action_bot, cluster,
                                                                                       fake_slack):
    cluster.add(peer_authentication("default", "payments", "STRICT"))
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    assert "your approval does not count" in typed(meshbot, fake_slack, f"approve {request_id}", "UALICE")
    assert "Approval recorded" in typed(meshbot, fake_slack, f"approve #{request_id}", "UBOB")
    assert "counts once" in typed(meshbot, fake_slack, f"approve {request_id}", "UBOB")
    assert "running now" in typed(meshbot, fake_slack, f"approve {request_id}", "UCAROL")
    assert wait_finished(meshbot, fake_slack, request_id).state == RequestState.SUCCEEDED

    answer = typed(meshbot, fake_slack, f"rollback {request_id}", "UBOB")
    rollback_id = int(answer.split("Rollback request #", 1)[1].split()[0])
    approve(meshbot, fake_slack, rollback_id, "UCAROL", "UDAVE")
    assert wait_finished(meshbot, fake_slack, rollback_id).state == RequestState.SUCCEEDED
    assert cluster.object("PeerAuthentication", "payments", "default")["spec"]["mtls"]["mode"] == "STRICT"
    clicks = [(e.actor, e.data["accepted"]) for e in events(meshbot, meshbot.approvals.get(request_id).incident_id)
              if e.kind == "approval_click" and e.data.get("request_id") == request_id]
    assert clicks[:3] == [("UALICE", False), ("UBOB", True), ("UBOB", False)], "typed votes are audited as clicks"


def test_reject_typed_as_text_closes_the_request(action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    assert "closed" in typed(meshbot, fake_slack, f"reject {request_id}", "UCAROL")
    assert request_state(meshbot, request_id) == RequestState.REJECTED
    body = slash_command_body("reject twelve", user_id="UCAROL", response_url=fake_slack.response_url())
    assert "not a request number" in post_signed(f"{meshbot.url}/slack/events", body).json()["text"]


def test_a_request_typed_during_an_open_incident_about_its_namespace_joins_that_incident(action_bot, cluster,
                                                                                        fake_slack):
    meshbot = action_bot()
    first, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    second, name = ask(meshbot, fake_slack, "bypass namespace payments")
    assert meshbot.approvals.get(second).incident_id == meshbot.approvals.get(first).incident_id
    assert "It is part of incident #1, which is open about `payments`" in fake_slack.answers_to(name)[0]
    quiesce(meshbot)
    assert len(fake_slack.messages(top_level=True)) == 1, "one top-level post for one conversation"


def test_a_long_diff_is_collapsed_into_the_attached_plan(action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "bypass namespace payments")
    blocks = request_message(fake_slack, request_id)["blocks"]
    diff = next(b["text"]["text"] for b in blocks if b.get("text", {}).get("text", "").startswith("*Diff"))
    assert diff.startswith("*Diff* (first 12 lines; the full plan is attached below)")
    upload = fake_slack.wait_for(lambda: fake_slack.of("files.getUploadURLExternal"), what="the plan upload")[0]
    assert upload.args["filename"] == f"request-{request_id}-plan.txt"
