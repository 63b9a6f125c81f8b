"""PodIndex: which pods a label selector picks, mesh-wide or in one namespace, without scanning every pod."""

from __future__ import annotations

from commands.cluster.selectors import PodIndex
from commands.cluster.snapshot import Resource


def pod(namespace: str, name: str, labels: dict) -> Resource:
    return Resource.from_object({"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": name, "namespace": namespace, "labels": labels}})


PODS = [pod("prod", "web-1", {"app": "web", "version": "v1"}), pod("prod", "web-2", {"app": "web", "version": "v2"}),
        pod("test", "web-3", {"app": "web", "version": "v1"}), pod("test", "odd", {"replicas": 3})]


def test_mesh_wide_select_intersects_every_pair_of_the_selector():
    assert [p.name for p in PodIndex(PODS).select({"app": "web", "version": "v1"})] == ["web-1", "web-3"]


def test_namespaced_select_keeps_only_that_namespaces_pods():
    index = PodIndex(PODS)
    assert [p.name for p in index.select({"app": "web"}, "test")] == ["web-3"]
    assert [p.name for p in index.select({"version": "v1"}, "prod")] == ["web-1"]
    assert index.select({"app": "web"}, "staging") == []


def test_namespaced_and_mesh_wide_lookups_answer_alike_in_any_order():
    index = PodIndex(PODS)
    assert [p.name for p in index.select({"app": "web"}, "prod")] == ["web-1", "web-2"]
    assert [p.name for p in index.select({"app": "web"})] == ["web-1", "web-2", "web-3"]


def test_a_non_string_label_value_matches_its_string_form():
    index = PodIndex(PODS)
    assert [p.name for p in index.select({"replicas": "3"})] == ["odd"]
    assert [p.name for p in index.select({"replicas": 3}, "test")] == ["odd"]


def test_an_empty_selector_selects_every_pod_in_scope():
    index = PodIndex(PODS)
    assert len(index.select({})) == 4
    assert [p.name for p in index.select({}, "prod")] == ["web-1", "web-2"]
