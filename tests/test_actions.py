"""Remediation actions against kmock's emulated API server: plan, dry-run, apply, verify, rollback."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from commands.actions import (
    ActionUsageError, Op, Plan, apply, dry_run, parse_action, plan_action, plan_diff, rollback_plan, verify,
)
from commands.actions.planners import EMERGENCY_POLICY
from commands.errors import UserError
from tests.support.kube import FakeKube

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def deployment(name: str, ns: str, *, labels: dict | None = None, annotations: dict | None = None,
               paused: bool = False, app: str | None = None) -> dict[str, Any]:
    template_meta: dict[str, Any] = {"labels": {"app": app or name, **(labels or {})}}
    if annotations:
        template_meta["annotations"] = annotations
    spec: dict[str, Any] = {"replicas": 2, "selector": {"matchLabels": {"app": app or name}},
                            "template": {"metadata": template_meta, "spec": {"containers": [{"name": "app"}]}}}
    if paused:
        spec["paused"] = True
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app or name}}, "spec": spec}


def peer_authentication(name: str, ns: str, mode: str, selector: dict | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"mtls": {"mode": mode}}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def plan_for(kube: FakeKube, text: str) -> Plan:
    return plan_action(kube.client(), parse_action(text.split()), NOW)


def template_value(obj: dict, *path: str) -> Any:
    node: Any = obj["spec"]["template"]["metadata"]
    for key in path:
        node = (node or {}).get(key)
    return node


# -- grammar ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, command", [
    ("permissive-mtls payments", "permissive-mtls payments"),
    ("permissive-mtls --mesh", "permissive-mtls --mesh"),
    ("bypass reviews -n bookinfo", "bypass reviews -n bookinfo"),
    ("bypass reviews bookinfo", "bypass reviews -n bookinfo"),
    ("bypass namespace payments", "bypass namespace payments"),
    ("restart istiod", "restart istiod -n istio-system"),
    ("restart istiod -n istio-canary", "restart istiod -n istio-canary"),
    ("restart payment --namespace=prod", "restart payment -n prod"),
])
def test_actions_parse_to_one_canonical_command(text, command):
    assert parse_action(text.split()).command == command


@pytest.mark.parametrize("text, complaint", [
    ("", "which action"),
    ("drop-table x", "unknown action"),
    ("permissive-mtls", "usage"),
    ("permissive-mtls Payments", "not a valid namespace"),
    ("bypass reviews", "usage"),
    ("bypass reviews -n", "needs one namespace"),
    ("restart ../etc -n prod", "not a valid Deployment"),
    ("restart a b c", "usage"),
])
def test_malformed_action_text_is_refused_with_the_usage(text, complaint):
    with pytest.raises(ActionUsageError, match=complaint):
        parse_action(text.split())


# -- permissive mTLS ----------------------------------------------------------------------------


def test_permissive_mtls_creates_the_emergency_policy_and_rollback_deletes_it(kube: FakeKube):
    kube.add(namespace("payments"))
    client = kube.client()
    plan = plan_for(kube, "permissive-mtls payments")
    assert [(c.op, c.name) for c in plan.changes] == [(Op.CREATE, EMERGENCY_POLICY)]
    assert "+  mtls:" in plan_diff(plan) or "mode: PERMISSIVE" in plan_diff(plan)

    assert dry_run(client, plan).ok
    assert kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None, "a dry run stores nothing"
    assert any(r.params.get("dryRun") == "All" for r in kube.requests("POST"))

    outcome = apply(client, plan)
    assert outcome.ok and outcome.applied == 1
    created = kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY)
    assert created["spec"] == {"mtls": {"mode": "PERMISSIVE"}}
    assert verify(client, plan).ok

    undo = rollback_plan(plan)
    assert apply(client, undo).ok
    assert kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None
    assert verify(client, undo).ok


def test_an_older_namespace_wide_strict_policy_is_switched_too_and_restored_by_the_rollback(kube: FakeKube):
    kube.add(namespace("payments"), peer_authentication("default", "payments", "STRICT"),
             peer_authentication("db-only", "payments", "STRICT", selector={"app": "db"}))
    client = kube.client()
    plan = plan_for(kube, "permissive-mtls payments")
    assert [(c.op, c.name) for c in plan.changes] == [(Op.CREATE, EMERGENCY_POLICY), (Op.PATCH, "default")]
    assert any("oldest" in note for note in plan.notes)
    assert any("db-only" in note and "stays STRICT" in note for note in plan.notes)

    assert apply(client, plan).ok
    assert kube.object("PeerAuthentication", "payments", "default")["spec"]["mtls"]["mode"] == "PERMISSIVE"
    assert apply(client, rollback_plan(plan)).ok
    assert kube.object("PeerAuthentication", "payments", "default")["spec"]["mtls"]["mode"] == "STRICT"
    assert kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None


@pytest.mark.parametrize("mtls", [None, {"mode": "UNSET"}])
def test_an_older_namespace_wide_policy_inheriting_the_mesh_mode_is_set_permissive_and_restored(kube: FakeKube, mtls):
    # With a STRICT mesh, such a policy is STRICT in effect, and the oldest namespace-wide policy is the one applied.
    inheriting = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                  "metadata": {"name": "default", "namespace": "payments"}, "spec": {"mtls": mtls} if mtls else {}}
    kube.add(namespace("payments"), inheriting)
    client = kube.client()
    plan = plan_for(kube, "permissive-mtls payments")
    assert [(c.op, c.name) for c in plan.changes] == [(Op.CREATE, EMERGENCY_POLICY), (Op.PATCH, "default")]
    assert any("inherits the mesh-wide mode" in note for note in plan.notes)

    assert apply(client, plan).ok
    assert kube.object("PeerAuthentication", "payments", "default")["spec"]["mtls"]["mode"] == "PERMISSIVE"
    assert apply(client, rollback_plan(plan)).ok
    restored = kube.object("PeerAuthentication", "payments", "default")["spec"].get("mtls") or {}
    assert restored.get("mode") == (mtls or {}).get("mode")


def test_mesh_wide_permissive_acts_in_the_istio_root_namespace(kube: FakeKube):
    kube.add(namespace("istio-system"), peer_authentication("strict-shop", "shop", "STRICT"))
    plan = plan_for(kube, "permissive-mtls --mesh")
    assert plan.changes[0].namespace == "istio-system"
    assert any("shop/strict-shop" in note for note in plan.notes)


def test_permissive_mtls_in_a_missing_namespace_is_a_clear_error(kube: FakeKube):
    with pytest.raises(UserError, match="namespace nowhere does not exist"):
        plan_for(kube, "permissive-mtls nowhere")


# -- bypass --------------------------------------------------------------------------------------


def test_bypass_sets_the_inject_label_and_rollback_restores_the_previous_value(kube: FakeKube):
    kube.add(deployment("reviews", "bookinfo", labels={"sidecar.istio.io/inject": "true"}))
    client = kube.client()
    plan = plan_for(kube, "bypass reviews -n bookinfo")
    assert apply(client, plan).ok
    assert template_value(kube.object("Deployment", "bookinfo", "reviews"), "labels",
                          "sidecar.istio.io/inject") == "false"
    assert verify(client, plan).ok

    assert apply(client, rollback_plan(plan)).ok
    assert template_value(kube.object("Deployment", "bookinfo", "reviews"), "labels",
                          "sidecar.istio.io/inject") == "true"


def test_bypass_rollback_removes_a_label_that_was_not_there(kube: FakeKube):
    kube.add(deployment("reviews", "bookinfo"))
    client = kube.client()
    plan = plan_for(kube, "bypass reviews -n bookinfo")
    assert apply(client, plan).ok
    assert apply(client, rollback_plan(plan)).ok
    assert "sidecar.istio.io/inject" not in template_value(kube.object("Deployment", "bookinfo", "reviews"),
                                                           "labels")


def test_bypass_namespace_disables_injection_and_restarts_its_deployments(kube: FakeKube):
    kube.add(namespace("payments", {"istio-injection": "enabled"}), deployment("api", "payments"),
             deployment("frozen", "payments", paused=True))
    client = kube.client()
    plan = plan_for(kube, "bypass namespace payments")
    assert [c.origin for c in plan.changes] == ["Namespace payments", "Deployment payments/api"]
    assert any("frozen" in note and "paused" in note for note in plan.notes)
    assert apply(client, plan).ok
    assert kube.object("Namespace", None, "payments")["metadata"]["labels"]["istio-injection"] == "disabled"
    assert template_value(kube.object("Deployment", "payments", "api"), "annotations",
                          "kubectl.kubernetes.io/restartedAt") == "2026-11-23T03:00:00Z"
    assert apply(client, rollback_plan(plan)).ok
    assert kube.object("Namespace", None, "payments")["metadata"]["labels"]["istio-injection"] == "enabled"


def test_bypass_namespace_rollback_restores_the_label_before_the_pods_roll(kube: FakeKube):
    # Pods rolled while the namespace still says "disabled" would come back without sidecars.
    kube.add(namespace("payments", {"istio-injection": "enabled"}), deployment("api", "payments"),
             deployment("web", "payments"))
    client = kube.client()
    plan = plan_for(kube, "bypass namespace payments")
    assert apply(client, plan).ok
    patches_before = len(kube.requests("PATCH"))

    assert apply(client, rollback_plan(plan)).ok

    rollback_writes = [r.url.path.rsplit("/", 2)[-2:] for r in kube.requests("PATCH")[patches_before:]]
    assert rollback_writes == [["namespaces", "payments"], ["deployments", "web"], ["deployments", "api"]]


@pytest.mark.parametrize("text, complaint", [
    ("bypass ghost -n bookinfo", "no Deployment ghost in namespace bookinfo"),
    ("bypass frozen -n bookinfo", "paused"),
    ("bypass out -n bookinfo", "already out of the mesh"),
])
def test_bypass_refuses_unknown_paused_and_already_bypassed_deployments(kube: FakeKube, text, complaint):
    kube.add(deployment("frozen", "bookinfo", paused=True),
             deployment("out", "bookinfo", labels={"sidecar.istio.io/inject": "false"}))
    with pytest.raises(UserError, match=complaint):
        plan_for(kube, text)


# -- restart -------------------------------------------------------------------------------------


def test_restart_stamps_the_pod_template_like_kubectl_and_offers_no_rollback(kube: FakeKube):
    kube.add(deployment("istiod", "istio-system"))
    client = kube.client()
    plan = plan_for(kube, "restart istiod")
    assert plan.action == "restart istiod -n istio-system" and not plan.reversible
    assert apply(client, plan).ok
    assert template_value(kube.object("Deployment", "istio-system", "istiod"), "annotations",
                          "kubectl.kubernetes.io/restartedAt") == "2026-11-23T03:00:00Z"
    assert verify(client, plan).ok


def test_restart_istiod_finds_the_single_revisioned_deployment_and_asks_when_there_are_several(kube: FakeKube):
    kube.add(deployment("istiod-1-22", "istio-system", app="istiod"))
    assert plan_for(kube, "restart istiod").action == "restart istiod-1-22 -n istio-system"
    kube.add(deployment("istiod-1-23", "istio-system", app="istiod"))
    with pytest.raises(UserError, match="several istiod revisions"):
        plan_for(kube, "restart istiod")


@pytest.mark.parametrize("text, paused", [
    ("restart payment -n prod", "payment"),
    ("bypass payment -n prod", "payment"),
    ("bypass namespace prod", "worker"),
])
def test_a_deployment_paused_after_the_plan_stops_it_before_any_write(kube: FakeKube, text, paused):
    kube.add(namespace("prod", {"istio-injection": "enabled"}), deployment("payment", "prod"),
             deployment("worker", "prod"))
    client = kube.client()
    plan = plan_for(kube, text)
    client.patch("Deployment", "prod", paused, {"spec": {"paused": True}})  # during the approval window
    patches_before = len(kube.requests("PATCH"))

    outcome = apply(client, plan)

    assert not outcome.ok and outcome.applied == 0
    assert f"Deployment prod/{paused} is paused now" in outcome.error and "rollout resume" in outcome.error
    assert len(kube.requests("PATCH")) == patches_before


def test_restart_refuses_a_paused_deployment(kube: FakeKube):
    kube.add(deployment("payment", "prod", paused=True))
    with pytest.raises(UserError, match="paused"):
        plan_for(kube, "restart payment -n prod")


# -- failures mid-way ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 409, 500])
def test_an_api_error_mid_way_stops_and_the_rollback_undoes_exactly_what_landed(kube: FakeKube, status):
    kube.add(namespace("payments", {"istio-injection": "enabled"}), deployment("a", "payments"),
             deployment("b", "payments"))
    client = kube.client()
    plan = plan_for(kube, "bypass namespace payments")
    kube.fail("Deployment", status, verb="patch", namespace="payments", name="b")

    outcome = apply(client, plan)
    assert not outcome.ok and "Deployment payments/b" in outcome.error
    assert [s.state for s in outcome.steps] == ["done", "done", "failed"]
    assert outcome.applied == (3 if status == 500 else 2), "a 5xx may have landed, so the rollback covers it"
    assert "kubectl.kubernetes.io/restartedAt" not in (template_value(
        kube.object("Deployment", "payments", "b"), "annotations") or {})

    undo = rollback_plan(plan, outcome.applied)
    assert apply(client, undo).ok, "already-undone or never-applied changes are skipped"
    assert kube.object("Namespace", None, "payments")["metadata"]["labels"]["istio-injection"] == "enabled"
    assert "kubectl.kubernetes.io/restartedAt" not in (template_value(
        kube.object("Deployment", "payments", "a"), "annotations") or {})


def test_a_timed_out_write_counts_as_possibly_applied(kube: FakeKube):
    kube.add(namespace("payments"))
    client = kube.client(timeout=0.3)
    plan = plan_for(kube, "permissive-mtls payments")
    kube.slow("PeerAuthentication", 2, verb="create", namespace="payments")
    outcome = apply(client, plan)
    assert not outcome.ok and outcome.applied == 1
    assert "no answer within" in outcome.error
    assert apply(kube.client(), rollback_plan(plan, outcome.applied)).ok
    assert kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None


def test_an_object_changed_since_the_plan_stops_everything_before_the_first_write(kube: FakeKube):
    kube.add(deployment("reviews", "bookinfo"))
    client = kube.client()
    plan = plan_for(kube, "bypass reviews -n bookinfo")
    client.patch("Deployment", "bookinfo", "reviews",
                 {"spec": {"template": {"metadata": {"labels": {"sidecar.istio.io/inject": "true"}}}}})
    patches_before = len(kube.requests("PATCH"))

    outcome = apply(client, plan)
    assert not outcome.ok and "changed since the plan was made" in outcome.error
    assert outcome.applied == 0 and len(kube.requests("PATCH")) == patches_before


def test_applying_twice_writes_once(kube: FakeKube):
    kube.add(namespace("payments"))
    client = kube.client()
    plan = plan_for(kube, "permissive-mtls payments")
    assert apply(client, plan).ok
    second = apply(client, plan)
    assert second.ok and [s.state for s in second.steps] == ["already in place"]
    assert len(kube.requests("POST")) == 1


def test_plans_round_trip_through_json_with_the_same_hash(kube: FakeKube):
    kube.add(namespace("payments"), peer_authentication("default", "payments", "STRICT"))
    plan = plan_for(kube, "permissive-mtls payments")
    again = Plan.from_dict(plan.to_dict())
    assert again == plan and again.hash == plan.hash
    assert rollback_plan(plan).rollback_of == plan.hash
