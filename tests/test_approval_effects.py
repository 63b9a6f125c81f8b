"""Preconditions, verification by effect and rollback judgement end to end: signed /mesh commands and button
presses over HTTP, kmock's API server (istiod's pod healthy or OOMKilled), a fake istiod whose syncz the test
moves once the change lands, and the fake Slack Web API."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.approvals.rule import RequestState
from commands.actions.planners import EMERGENCY_POLICY
from tests.support.istiod import FakeIstiod, syncz_entry
from tests.support.kube import FakeKube, write_kubeconfig
from tests.support.slack import FakeSlack
from tests.test_actions import deployment, istiod_deployment, namespace
from tests.test_approvals import (
    APPROVERS,
    approve,
    ask,
    ask_rollback,
    istiod_pod,
    latest_blocks,
    press,
    request_message,
    wait_finished,
)

PROXY = "reviews-1.payments"


@pytest.fixture
def healthy(kube: FakeKube) -> FakeKube:
    kube.add(namespace("payments"), namespace("istio-system"), istiod_deployment("2Gi"),
             deployment("reviews", "payments"), istiod_pod())
    return kube


@pytest.fixture
def oomkilled(kube: FakeKube) -> FakeKube:
    kube.add(namespace("payments"), namespace("istio-system"), istiod_deployment("2Gi"),
             deployment("reviews", "payments"), istiod_pod(oom_killed=True))
    return kube


@pytest.fixture
def syncz(istiod_server: FakeIstiod) -> FakeIstiod:
    istiod_server.answer("/debug/syncz", [syncz_entry(PROXY)])
    return istiod_server


@pytest.fixture
def start_bot(kube, bot_factory, syncz, fake_slack, tmp_path):
    """Starts after the emulated cluster, so it stops before the cluster does."""
    def start(kube: FakeKube, *, settle: timedelta = timedelta(0), follow_up: timedelta | None = None, **backend):
        config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
        meshbot = bot_factory(scenario=None, kubeconfig=config, kube_context="kmock", kube_timeout=2.0,
                              approvers=APPROVERS, required_approvals=2, channel="CINCIDENT", istiod_url=syncz.url,
                              **backend)
        meshbot.services.approvals.effects.settle = settle
        meshbot.services.outbox.min_post_interval = 0.0  # Slack's per-channel pacing is tests/test_outbox.py's subject
        if follow_up is not None:
            meshbot.services.approvals.effects.follow_up_after = follow_up
        return meshbot
    fake_slack.usergroups = {"S0SRE": ["UDAVE"]}
    return start


def thread_notes(fake_slack: FakeSlack, needle: str) -> list[str]:
    return [m.get("text", "") for m in fake_slack.messages() if needle in m.get("text", "")]


def test_with_istiod_oomkilled_permissive_mtls_says_fix_istiod_first_and_its_run_stops_before_any_write(
        start_bot, oomkilled, fake_slack):
    meshbot = start_bot(oomkilled)
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    card = str(request_message(fake_slack, request_id)["blocks"])
    assert "Not yet:" in card and "memory istiod -n istio-system --limit 4096Mi --container discovery" in card
    assert "istiod Ready and pushing config: failing" in card

    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    done = wait_finished(meshbot, fake_slack, request_id)
    assert done.state == RequestState.FAILED and done.applied == 0
    assert done.result["error"].startswith("Stopped before any write: istiod")
    assert oomkilled.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None, "nothing was written"
    assert fake_slack.wait_for(lambda: thread_notes(fake_slack, "Stopped before any write"), what="the thread note")


def test_with_istiod_oomkilled_raising_its_memory_is_not_blocked_and_is_verified_when_istiod_answers(
        start_bot, oomkilled, fake_slack):
    meshbot = start_bot(oomkilled)
    request_id, _ = ask(meshbot, fake_slack, "memory istiod --limit 4Gi")
    card = str(request_message(fake_slack, request_id)["blocks"])
    assert "Not yet" not in card and "Kubernetes API server reachable: met" in card
    assert "memory: \\\\\"2Gi\\\\\" \u2192 \\\\\"4Gi\\\\\"" in card or "\u2192" in card

    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    done = wait_finished(meshbot, fake_slack, request_id)
    assert done.state == RequestState.SUCCEEDED
    [container] = oomkilled.object("Deployment", "istio-system", "istiod")["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["memory"] == "4Gi"
    assert done.verification["effect"]["outcome"] == "seen"
    assert fake_slack.wait_for(lambda: thread_notes(fake_slack, "executed and verified by its effect"),
                               what="the verified note")


def test_a_config_change_is_verified_only_once_the_proxies_acknowledge_it(start_bot, healthy, syncz, fake_slack):
    meshbot = start_bot(healthy, settle=timedelta(seconds=20))
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    # istiod pushes the new policy once it is in the API server, and the proxy acknowledges it.
    fake_slack.wait_for(lambda: healthy.object("PeerAuthentication", "payments", EMERGENCY_POLICY),
                        what="the policy written")
    syncz.answer("/debug/syncz", [syncz_entry(PROXY, cluster_sent="c-2", cluster_acked="c-2",
                                              listener_sent="l-2", listener_acked="l-2")])
    done = wait_finished(meshbot, fake_slack, request_id)
    assert done.verification["effect"]["outcome"] == "seen"
    assert "all 1 proxies in scope acknowledged the new config" in done.verification["effect"]["lines"][0]


def test_a_config_change_no_proxy_acknowledges_is_executed_but_not_called_verified(start_bot, healthy, fake_slack):
    meshbot = start_bot(healthy)
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    done = wait_finished(meshbot, fake_slack, request_id)
    assert done.state == RequestState.SUCCEEDED and done.verification["effect"]["outcome"] == "not seen"
    [note] = fake_slack.wait_for(lambda: thread_notes(fake_slack, f"(request #{request_id})."), what="the note")
    assert "effect not seen" in note and "verified" not in note.replace("not seen", "")
    top = fake_slack.wait_for(lambda: fake_slack.messages(top_level=True), what="the incident")[0]
    shown = fake_slack.wait_for(lambda: "effect NOT seen" in str(latest_blocks(fake_slack, top)),
                                what="the top message's step state")
    assert shown


def test_the_follow_up_looks_again_once_and_says_what_changed_in_the_thread(start_bot, healthy, syncz, fake_slack,
                                                                            backend_settings):
    meshbot = start_bot(healthy, follow_up=timedelta(0), **backend_settings)
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    wait_finished(meshbot, fake_slack, request_id)
    syncz.answer("/debug/syncz", [syncz_entry(PROXY, cluster_sent="c-2", cluster_acked="c-2")])

    assert meshbot.services.approvals.run_follow_ups() == 1
    assert meshbot.services.approvals.run_follow_ups() == 0, "one follow-up per request"
    followed = meshbot.approvals.get(request_id).verification["follow_up"]
    assert followed["outcome"] == "seen"
    assert fake_slack.wait_for(lambda: thread_notes(fake_slack, "Follow-up on `/mesh permissive-mtls payments`"),
                               what="the follow-up note")


def test_a_rollback_while_istiod_is_down_says_what_breaks_and_roll_back_later_leaves_the_change(
        start_bot, healthy, fake_slack):
    # Pods are read afresh by every diagnosis (no 10 s reuse window), so the crash below shows at the next one.
    meshbot = start_bot(healthy, cluster_reuse_seconds=0)
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    wait_finished(meshbot, fake_slack, request_id)
    healthy.add(istiod_pod(oom_killed=True))  # the cause came back
    diagnostician = meshbot.services.diagnostician
    fake_slack.wait_for(lambda: any(f.code == "MB1002" for f in diagnostician.run(("status",), "istio-system").findings),
                        what="the bot's view of the cluster to see istiod OOMKilled")

    rollback_id = ask_rollback(meshbot, fake_slack, request_id, "UBOB")
    card = str(request_message(fake_slack, rollback_id)["blocks"])
    assert "If you roll back while the cause is still there" in card
    assert "istiod Ready and pushing config: failing" in card and "Roll back later" in card

    answer = press(meshbot, fake_slack, "approval_rollback_later", str(rollback_id), "UCAROL")
    assert "left for later" in answer
    assert meshbot.approvals.get(rollback_id).deferred
    assert meshbot.approvals.get(request_id).can_roll_back, "the change stays, and so does its Rollback"
    assert healthy.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is not None
    assert fake_slack.wait_for(lambda: thread_notes(fake_slack, f"left rollback #{rollback_id} for later"),
                               what="the thread note")
    assert "no longer waiting" in press(meshbot, fake_slack, "approval_rollback_later", str(rollback_id), "UBOB")
