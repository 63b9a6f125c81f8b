"""What a diagnosis lists: scoped to its namespace where the checks allow it, and only the fields they read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.mesh_generator import generate
from commands.catalog import default_checks
from commands.cluster.snapshot import Resource, Snapshot
from commands.cluster.sources.kube import NAMESPACE_SCOPED_READS, KubeSource, trimmed
from commands.resources.kinds import KINDS
from tests.support.injected import injected_pod
from tests.support.kube import FakeKube

ISTIO = "istio-system"
EVERY_KIND = default_checks().kinds_for(["status", "proxy-status", "certs", "envoy", "analyze"])


def obj(kind: str, name: str, namespace: str | None = None, **fields: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **fields.pop("metadata", {})}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": KINDS[kind].api_version, "kind": kind, "metadata": metadata, **fields}


@pytest.fixture
def teams(kube: FakeKube) -> FakeKube:
    """istiod, an ingress gateway in its own namespace, and two teams whose pods the other must not pay for."""
    kube.add(
        obj("Namespace", ISTIO), obj("Namespace", "istio-ingress"), obj("Namespace", "prod"),
        obj("Namespace", "staging"),
        injected_pod("istiod-1", ISTIO, {"app": "istiod"}, container="discovery"),
        injected_pod("ingress-1", "istio-ingress", {"istio": "ingressgateway"}),
        obj("Gateway", "shop-gw", "prod", spec={"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["shop.example.com"]}]}),
        *(injected_pod(f"shop-{i}", "prod", {"app": "shop"}) for i in range(3)),
        *(injected_pod(f"cart-{i}", "staging", {"app": "cart"}) for i in range(3)),
        obj("Service", "cart", "staging", spec={"ports": [{"name": "http", "port": 80}]}),
        obj("Deployment", "cart", "staging", spec={"replicas": 3}),
        obj("Event", "cart-1.17f", "staging", type="Warning", reason="BackOff"),
        obj("Event", "shop-1.17f", "prod", type="Warning", reason="BackOff"),
    )
    return kube


def pod_list_paths(kube: FakeKube) -> list[tuple[str, str | None]]:
    return [(r.url.path, r.params.get("labelSelector")) for r in kube.requests("GET")
            if r.url.path.endswith("/pods") and r.url.path.startswith("/api/")]


def test_a_namespace_diagnosis_never_lists_another_namespaces_pods(teams: FakeKube):
    snapshot = KubeSource(teams.client(), namespace="prod").snapshot(EVERY_KIND)

    assert sorted(pod_list_paths(teams)) == [
        ("/api/v1/namespaces/istio-system/pods", None), ("/api/v1/namespaces/prod/pods", None),
        ("/api/v1/pods", "istio=ingressgateway")]
    assert not [p for p in snapshot.of_kind("Pod") if p.namespace == "staging"]


def test_the_pods_a_gateway_selects_are_read_wherever_they_run(teams: FakeKube):
    snapshot = KubeSource(teams.client(), namespace="prod").snapshot(["Gateway", "Pod"])

    assert snapshot.get("Pod", "istio-ingress", "ingress-1") is not None
    assert {p.name for p in snapshot.of_kind("Pod", "prod")} == {"shop-0", "shop-1", "shop-2"}


def test_pod_sized_kinds_are_listed_in_the_namespace_and_the_istio_namespace_only(teams: FakeKube):
    snapshot = KubeSource(teams.client(), namespace="prod").snapshot(EVERY_KIND)

    for kind in NAMESPACE_SCOPED_READS & set(EVERY_KIND):
        assert {r.namespace for r in snapshot.of_kind(kind)} <= {"prod", ISTIO, "istio-ingress"}, kind
    assert [e.name for e in snapshot.of_kind("Event")] == ["shop-1.17f"]
    assert teams.count("GET", "/api/v1/namespaces/prod/events") == 1


def test_mesh_wide_configuration_is_still_listed_cluster_wide_for_a_namespace(teams: FakeKube):
    snapshot = KubeSource(teams.client(), namespace="prod").snapshot(EVERY_KIND)

    # A VirtualService in prod may route to a Service in staging: the analyzers need every Service.
    assert snapshot.get("Service", "staging", "cart") is not None
    assert teams.count("GET", "/api/v1/services") == 1


def test_a_whole_mesh_diagnosis_lists_pods_cluster_wide_in_pages(teams: FakeKube):
    snapshot = KubeSource(teams.client()).snapshot(["Pod"])

    assert pod_list_paths(teams) == [("/api/v1/pods", None)]
    assert len(snapshot.of_kind("Pod")) == 8
    assert teams.requests("GET", "/api/v1/pods")[0].params["limit"] == "500"


def test_a_listed_pod_keeps_what_the_checks_read_and_drops_the_bulk(teams: FakeKube):
    pod = KubeSource(teams.client(), namespace="prod").snapshot(["Pod"]).get("Pod", "prod", "shop-0")

    assert "managedFields" not in pod.metadata
    assert "volumes" not in pod.spec
    proxy = next(c for c in pod.spec["containers"] if c["name"] == "istio-proxy")
    assert "env" not in proxy and "volumeMounts" not in proxy
    assert proxy["resources"]["limits"]["memory"] == "1Gi"
    assert pod.status["containerStatuses"][1]["restartCount"] == 0
    assert "sidecar.istio.io/status" in pod.annotations


def mesh_with_injected_pods(pods: int) -> list[dict[str, Any]]:
    """The benchmark's generated mesh, its pods replaced by full injected pods (with some restarting)."""
    objects = []
    for item in generate(pods):
        if item["kind"] == "Pod":
            meta = item["metadata"]
            proxy = item["spec"]["containers"][1]["name"]
            restarts = item["status"]["containerStatuses"][1]["restartCount"]
            item = injected_pod(meta["name"], meta["namespace"], meta["labels"], restarts=restarts, container=proxy)
        objects.append(item)
    return objects


def copied(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return json.loads(json.dumps(objects))  # a deep copy, many times faster than copy.deepcopy


class Objects:
    def __init__(self, objects: list[dict[str, Any]]):
        self.objects = objects

    def snapshot(self, kinds: Any) -> Snapshot:
        return Snapshot([Resource.from_object(o) for o in copied(self.objects) if o["kind"] in kinds])


def test_trimming_changes_no_finding_of_any_check():
    objects = mesh_with_injected_pods(400)
    checks = ["status", "certs", "analyze"]

    untrimmed = default_checks().diagnose(checks, Objects(objects))
    trimmed_objects = [trimmed(o) for o in copied(objects)]
    after = default_checks().diagnose(checks, Objects(trimmed_objects))

    assert [f.to_dict() for f in after] == [f.to_dict() for f in untrimmed]
    assert untrimmed  # the generated mesh is broken on purpose: there is something to compare
