"""The demo's embedded cluster and the controller that makes it react to the bot's actions."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from bot.demo.cluster import TEMPLATE_HASH_LABEL, EmbeddedCluster, deployments_for, scenario_objects
from bot.demo.controller import DemoController, injects_sidecar, plan_rollout
from commands.clients.kube import KubeClient
from commands.cluster.demo import load_scenario

NOW = datetime(2026, 11, 24, 3, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def scenario_pods():
    return [o for o in scenario_objects(load_scenario().cluster_dir) if o["kind"] == "Pod"]


def _deployment(pods, namespace, name):
    deployment = next(d for d in deployments_for(pods) if d["metadata"]["name"] == name)
    assert deployment["metadata"]["namespace"] == namespace
    return deployment


def _adopted(pods, deployment):
    """The pods as the embedded cluster stores them: labelled with their Deployment's current template."""
    from bot.demo.cluster import adopt
    pods = copy.deepcopy(pods)
    adopt([deployment], pods)
    return pods


def test_restarted_istiod_comes_back_ready_without_the_oomkill(scenario_pods):
    istiod = _deployment(scenario_pods, "istio-system", "istiod")
    pods = _adopted(scenario_pods, istiod)
    istiod["spec"]["template"].setdefault("metadata", {})["annotations"] = {
        "kubectl.kubernetes.io/restartedAt": "2026-11-24T03:20:00Z"}

    rollout = plan_rollout(istiod, pods, {}, NOW)

    assert rollout.retire == ("istiod-5d8f7c9b6-qx7wz",)
    (pod,) = rollout.start
    assert pod["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    (discovery,) = pod["status"]["containerStatuses"]
    assert discovery["ready"] is True and discovery["restartCount"] == 0 and "lastState" not in discovery
    assert pod["metadata"]["labels"][TEMPLATE_HASH_LABEL] == rollout.template_hash
    assert pod["metadata"]["name"].startswith(f"istiod-{rollout.template_hash}-")


def test_unchanged_deployment_is_left_alone(scenario_pods):
    istiod = _deployment(scenario_pods, "istio-system", "istiod")
    assert plan_rollout(istiod, _adopted(scenario_pods, istiod), {}, NOW) is None


def test_bypassed_workload_runs_without_istio_proxy_or_the_injected_labels(scenario_pods):
    payment = _deployment(scenario_pods, "prod", "payment-service")
    pods = _adopted(scenario_pods, payment)
    payment["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] = "false"

    rollout = plan_rollout(payment, pods, {"istio-injection": "enabled"}, NOW)

    assert len(rollout.start) == 2
    for pod in rollout.start:
        assert [c["name"] for c in pod["spec"]["containers"]] == ["payment-service"]
        assert "security.istio.io/tlsMode" not in pod["metadata"]["labels"]
        assert pod["status"]["conditions"] == [{"type": "Ready", "status": "True"}]


def test_restart_without_bypass_keeps_the_crashing_sidecar_crashing(scenario_pods):
    payment = _deployment(scenario_pods, "prod", "payment-service")
    pods = _adopted(scenario_pods, payment)
    payment["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "x"}

    rollout = plan_rollout(payment, pods, {"istio-injection": "enabled"}, NOW)

    def crashing(pod):
        return [s["name"] for s in pod["status"]["containerStatuses"]
                if (s.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"]

    before = {p["metadata"]["name"]: crashing(p) for p in pods if p["metadata"]["name"] in rollout.retire}
    assert sorted(before.values()) == [[], ["istio-proxy"]]  # x2x4k's sidecar crash-loops, m5p7r's does not
    for old, pod in zip(rollout.retire, rollout.start):
        assert [c["name"] for c in pod["spec"]["containers"]] == ["payment-service", "istio-proxy"]
        assert crashing(pod) == before[old]
        assert pod["status"]["conditions"] == [{"type": "Ready", "status": "False" if before[old] else "True"}]


def test_injection_policy_follows_istio_pod_label_over_namespace():
    template = {"metadata": {"labels": {"sidecar.istio.io/inject": "false"}}}
    assert injects_sidecar(template, {"istio-injection": "enabled"}, was_injected=True) is False
    assert injects_sidecar({"metadata": {"labels": {}}}, {"istio-injection": "disabled"}, was_injected=True) is False
    assert injects_sidecar({"metadata": {"labels": {}}}, {"istio-injection": "enabled"}, was_injected=False) is True
    assert injects_sidecar({"metadata": {"labels": {}}}, {}, was_injected=True) is True


@pytest.fixture
def embedded():
    cluster = EmbeddedCluster().start()
    cluster.load_scenario(load_scenario())
    client = KubeClient.for_host(cluster.url, timeout=5)
    yield cluster, client
    client.close()
    cluster.stop()


def test_controller_rolls_istiod_through_the_api_after_a_restart_patch(embedded):
    cluster, client = embedded
    controller = DemoController(client, clock=lambda: NOW)
    assert controller.reconcile() == []  # the loaded scenario is steady: nothing rolls by itself

    client.patch("Deployment", "istio-system", "istiod", {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-11-24T03:20:00Z"}}}}})
    (rollout,) = controller.reconcile()

    pods = client.list("Pod", "istio-system", label_selector="app=istiod")
    assert [p["metadata"]["name"] for p in pods] == [rollout.start[0]["metadata"]["name"]]
    assert pods[0]["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert client.get("Deployment", "istio-system", "istiod")["status"]["updatedReplicas"] == 1
    assert controller.reconcile() == []


def test_embedded_cluster_dry_run_stores_nothing(embedded):
    _, client = embedded
    body = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "meshbot-emergency-permissive", "namespace": "prod"},
            "spec": {"mtls": {"mode": "PERMISSIVE"}}}
    client.create("PeerAuthentication", body, dry_run=True)
    assert "meshbot-emergency-permissive" not in [p["metadata"]["name"] for p in client.list("PeerAuthentication")]
    client.create("PeerAuthentication", body)
    assert "meshbot-emergency-permissive" in [p["metadata"]["name"] for p in client.list("PeerAuthentication")]


def test_embedded_cluster_serves_namespaces_and_filters_lists_by_selector(embedded):
    _, client = embedded
    assert {n["metadata"]["name"] for n in client.list("Namespace")} == {"istio-system", "prod", "legacy"}
    roots = client.list("ConfigMap", field_selector="metadata.name=istio-ca-root-cert")
    assert {c["metadata"]["namespace"] for c in roots} == {"istio-system", "prod", "legacy"}
    assert client.list("Pod", label_selector="app=nothing-like-this") == []
