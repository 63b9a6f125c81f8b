"""The precondition re-check right before the first write reads the cluster fresh: istiod that stops being Ready
between approval and execution stops the run before anything is written, with istiod's fix first, although the
bot's shared view of the cluster still holds the pods it read when the plan was made.  Signed /mesh commands and
button presses over HTTP, kmock's API server and the fake Slack Web API."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.approvals.rule import RequestState
from commands.actions.planners import EMERGENCY_POLICY
from tests.support.istiod import FakeIstiod, syncz_entry
from tests.support.kube import FakeKube, write_kubeconfig
from tests.test_actions import deployment, istiod_deployment, namespace
from tests.test_approvals import APPROVERS, approve, ask, istiod_pod, wait_finished

OOMKILLED = "MB1002"


@pytest.fixture
def meshbot(kube: FakeKube, bot_factory, istiod_server: FakeIstiod, fake_slack, tmp_path):
    kube.add(namespace("payments"), namespace("istio-system"), istiod_deployment("2Gi"),
             deployment("reviews", "payments"), istiod_pod())
    istiod_server.answer("/debug/syncz", [syncz_entry("reviews.payments")])
    fake_slack.usergroups = {"S0SRE": ["UDAVE"]}
    bot = bot_factory(scenario=None, kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", kube.url),
                      kube_context="kmock", kube_timeout=2.0, approvers=APPROVERS, required_approvals=2,
                      channel="CINCIDENT", istiod_url=istiod_server.url)
    bot.services.approvals.effects.settle = timedelta(0)
    # The shared view keeps a namespace's pods for 10 s; an hour here makes "the view is stale" certain however
    # slowly the machine runs, so only a fresh read can see istiod go down.
    bot.services.cluster.view().fresh_seconds = 3600
    return bot


def test_istiod_going_unready_after_approval_stops_the_run_before_any_write_with_istiods_fix_first(
        meshbot, kube: FakeKube, fake_slack):
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    kube.add(istiod_pod(oom_killed=True))  # istiod is OOMKilled while the approvers read the card
    stale = meshbot.services.diagnostician.run(("status",), "istio-system")
    assert not any(f.code == OOMKILLED for f in stale.findings), "the shared view still holds the Ready pod"

    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    done = wait_finished(meshbot, fake_slack, request_id)
    assert done.state == RequestState.FAILED and done.applied == 0
    error = done.result["error"]
    assert error.startswith("Stopped before any write: istiod")
    assert "memory istiod -n istio-system --limit 4096Mi" in error, "istiod's own fix comes first"
    assert kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None, "nothing was written"


def test_a_ready_istiod_read_fresh_lets_the_run_go_ahead(meshbot, kube: FakeKube, fake_slack):
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments")
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    done = wait_finished(meshbot, fake_slack, request_id)
    assert done.state == RequestState.SUCCEEDED
    assert kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is not None
