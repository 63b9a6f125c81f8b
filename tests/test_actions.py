"""Remediation actions against kmock's emulated API server: plan, dry-run, apply, verify, rollback."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from commands.actions import (
    ActionUsageError,
    Op,
    Plan,
    apply,
    dry_run,
    parse_action,
    plan_action,
    plan_diff,
    rollback_plan,
    verify,
)
from commands.actions.destination_rules import PLAINTEXT_RULE
from commands.actions.planners import BOTH_HALVES, EMERGENCY_POLICY, MAKES_WORSE
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


def meshed_namespace(name: str) -> dict[str, Any]:
    return namespace(name, {"istio-injection": "enabled"})


def injected_pod(name: str, ns: str) -> dict[str, Any]:
    """A pod as the sidecar injector leaves it: istiod gives its endpoints auto mTLS by this label."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name, "security.istio.io/tlsMode": "istio"}},
            "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]}}


def destination_rule(name: str, ns: str, host: str, tls_mode: str | None = None, *,
                     traffic_policy: dict | None = None, export_to: list[str] | None = None,
                     subsets: list[dict] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": host}
    if traffic_policy is not None:
        spec["trafficPolicy"] = traffic_policy
    if tls_mode is not None:
        spec.setdefault("trafficPolicy", {})["tls"] = {"mode": tls_mode}
    if export_to is not None:
        spec["exportTo"] = export_to
    if subsets is not None:
        spec["subsets"] = subsets
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def authorization_policy(name: str, ns: str, source: dict[str, list[str]]) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"action": "ALLOW", "rules": [{"from": [{"source": source}]}]}}


def changed(plan: Plan) -> list[tuple[str, str, str]]:
    return [(str(c.op), c.kind, f"{c.namespace}/{c.name}") for c in plan.changes]


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
    ("permissive-mtls --mesh-wide", "permissive-mtls --mesh"),
    ("permissive-mtls --servers-only payments", "permissive-mtls payments --servers-only"),
    ("permissive-mtls payments --plaintext-clients", "permissive-mtls payments --plaintext-clients"),
    ("permissive-mtls --mesh-wide --servers-only", "permissive-mtls --mesh --servers-only"),
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
    ("permissive-mtls payments --mesh", "usage"),
    ("permissive-mtls payments --servers-only --plaintext-clients", "choose one"),
    ("permissive-mtls payments --force", "usage"),
    ("bypass reviews", "usage"),
    ("bypass reviews -n", "needs one namespace"),
    ("restart ../etc -n prod", "not a valid Deployment"),
    ("restart a b c", "usage"),
])
def test_malformed_action_text_is_refused_with_the_usage(text, complaint):
    with pytest.raises(ActionUsageError, match=complaint):
        parse_action(text.split())


# -- permissive mTLS ----------------------------------------------------------------------------


def test_permissive_mtls_without_sidecars_in_the_namespace_creates_only_the_policy_and_rollback_deletes_it(
        kube: FakeKube):
    # No injected pod and no injection label: auto mTLS already sends these servers plaintext.
    kube.add(namespace("payments"), injected_pod("elsewhere", "shop"))
    client = kube.client()
    plan = plan_for(kube, "permissive-mtls payments")
    assert [(c.op, c.name) for c in plan.changes] == [(Op.CREATE, EMERGENCY_POLICY)]
    assert any("no DestinationRule is added" in note for note in plan.notes)
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


# -- permissive mTLS: clients told to send plaintext (DestinationRule) ----------------------------


def test_in_a_meshed_namespace_with_no_rules_the_plan_is_the_policy_and_a_plaintext_rule(kube: FakeKube):
    kube.add(meshed_namespace("payments"))
    plan = plan_for(kube, "permissive-mtls payments")

    assert changed(plan) == [("create", "PeerAuthentication", f"payments/{EMERGENCY_POLICY}"),
                             ("create", "DestinationRule", f"payments/{PLAINTEXT_RULE}")]
    assert plan.changes[1].body["spec"] == {"host": "*.payments.svc.cluster.local", "exportTo": ["*"],
                                            "trafficPolicy": {"tls": {"mode": "DISABLE"}}}
    assert plan.notes[:2] == (BOTH_HALVES, MAKES_WORSE)
    assert not any("will keep mTLS" in note for note in plan.notes)
    assert "send plaintext" in plan.summary


def test_a_namespace_with_disabled_injection_and_a_revision_label_gets_no_plaintext_rule(kube: FakeKube):
    # istio-injection=disabled wins over istio.io/rev (commands.cluster.injection), as in the analyzers: no
    # sidecar here, so auto mTLS already sends these servers plaintext.
    kube.add(namespace("payments", {"istio-injection": "disabled", "istio.io/rev": "canary"}))
    plan = plan_for(kube, "permissive-mtls payments")

    assert changed(plan) == [("create", "PeerAuthentication", f"payments/{EMERGENCY_POLICY}")]
    assert any("no DestinationRule is added" in note for note in plan.notes)


def test_a_namespace_with_only_a_revision_label_gets_the_plaintext_rule(kube: FakeKube):
    kube.add(namespace("payments", {"istio.io/rev": "canary"}))
    plan = plan_for(kube, "permissive-mtls payments")

    assert ("create", "DestinationRule", f"payments/{PLAINTEXT_RULE}") in changed(plan)


def test_a_dry_run_sends_both_halves_with_dry_run_all_and_stores_neither(kube: FakeKube):
    kube.add(meshed_namespace("payments"), destination_rule("reviews", "payments", "reviews", "ISTIO_MUTUAL"))
    client = kube.client()
    plan = plan_for(kube, "permissive-mtls payments")

    outcome = dry_run(client, plan)

    assert outcome.ok and [s.state for s in outcome.steps] == ["done", "done", "done"]
    writes = kube.requests("POST") + kube.requests("PATCH")
    assert len(writes) == 3 and all(r.params.get("dryRun") == "All" for r in writes)
    assert kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None
    assert kube.object("DestinationRule", "payments", PLAINTEXT_RULE) is None
    assert kube.object("DestinationRule", "payments", "reviews")["spec"]["trafficPolicy"]["tls"]["mode"] == \
        "ISTIO_MUTUAL"


def test_a_more_specific_istio_mutual_rule_is_named_patched_to_disable_and_restored_by_the_rollback(kube: FakeKube):
    # "reviews" resolves to reviews.payments.svc.cluster.local, more specific than meshbot's wildcard: it wins.
    kube.add(namespace("payments"), injected_pod("reviews-1", "payments"),
             destination_rule("reviews", "payments", "reviews", "ISTIO_MUTUAL"))
    client = kube.client()
    plan = plan_for(kube, "permissive-mtls payments")

    assert changed(plan) == [("create", "PeerAuthentication", f"payments/{EMERGENCY_POLICY}"),
                             ("create", "DestinationRule", f"payments/{PLAINTEXT_RULE}"),
                             ("patch", "DestinationRule", "payments/reviews")]
    [note] = [n for n in plan.notes if "DestinationRule payments/reviews" in n]
    assert "tls ISTIO_MUTUAL" in note and "will keep mTLS" in note and "patches its TLS to DISABLE" in note

    assert apply(client, plan).ok and verify(client, plan).ok
    assert kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY)["spec"] == {"mtls": {"mode": "PERMISSIVE"}}
    assert kube.object("DestinationRule", "payments", PLAINTEXT_RULE)["spec"]["trafficPolicy"] == \
        {"tls": {"mode": "DISABLE"}}
    assert kube.object("DestinationRule", "payments", "reviews")["spec"]["trafficPolicy"] == {"tls": {"mode": "DISABLE"}}

    deletes_before = len(kube.requests("DELETE"))
    assert apply(client, rollback_plan(plan)).ok
    assert kube.object("DestinationRule", "payments", "reviews")["spec"]["trafficPolicy"] == \
        {"tls": {"mode": "ISTIO_MUTUAL"}}
    assert kube.object("DestinationRule", "payments", PLAINTEXT_RULE) is None
    assert kube.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None
    deleted = [r.url.path.rsplit("/", 2)[-2:] for r in kube.requests("DELETE")[deletes_before:]]
    assert deleted == [["destinationrules", PLAINTEXT_RULE], ["peerauthentications", EMERGENCY_POLICY]], \
        "clients go back to mTLS before the servers demand it again"


@pytest.mark.parametrize("policy", [None, {"connectionPool": {"tcp": {"maxConnections": 100}}}])
def test_a_winning_rule_without_tls_uses_auto_mtls_and_the_rollback_removes_the_tls_it_added(kube: FakeKube, policy):
    # No tls in the rule means auto mTLS; a left-behind `tls: {}` would mean DISABLE, so the rollback must remove it.
    kube.add(meshed_namespace("payments"),
             destination_rule("ratings", "payments", "ratings.payments.svc.cluster.local", traffic_policy=policy))
    client = kube.client()
    plan = plan_for(kube, "permissive-mtls payments")
    assert any("payments/ratings" in n and "no tls, so auto mTLS" in n for n in plan.notes)

    assert apply(client, plan).ok
    assert kube.object("DestinationRule", "payments", "ratings")["spec"]["trafficPolicy"]["tls"] == {"mode": "DISABLE"}
    assert apply(client, rollback_plan(plan)).ok
    assert kube.object("DestinationRule", "payments", "ratings")["spec"].get("trafficPolicy") == policy


def test_port_level_and_subset_mtls_are_switched_and_restored_whole(kube: FakeKube):
    ports = [{"port": {"number": 9080}, "tls": {"mode": "ISTIO_MUTUAL"}}, {"port": {"number": 9090}}]
    subsets = [{"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}},
               {"name": "v2", "labels": {"version": "v2"}}]
    kube.add(meshed_namespace("payments"),
             destination_rule("reviews", "payments", "reviews", "DISABLE",
                              traffic_policy={"portLevelSettings": ports}, subsets=subsets))
    client = kube.client()
    plan = plan_for(kube, "permissive-mtls payments")
    [note] = [n for n in plan.notes if "payments/reviews" in n]
    assert "2 port-level setting(s)" in note and "subset(s) v1" in note

    assert apply(client, plan).ok
    stored = kube.object("DestinationRule", "payments", "reviews")["spec"]
    assert [p["tls"]["mode"] for p in stored["trafficPolicy"]["portLevelSettings"]] == ["DISABLE", "DISABLE"]
    assert stored["subsets"][0]["trafficPolicy"]["tls"]["mode"] == "DISABLE"
    assert "trafficPolicy" not in stored["subsets"][1], "a subset without a policy inherits the top-level DISABLE"
    assert apply(client, rollback_plan(plan)).ok
    restored = kube.object("DestinationRule", "payments", "reviews")["spec"]
    assert restored["trafficPolicy"] == {"portLevelSettings": ports, "tls": {"mode": "DISABLE"}}
    assert restored["subsets"] == subsets


def test_client_namespace_rules_for_these_hosts_are_patched_but_wider_ones_are_named_and_left_alone(kube: FakeKube):
    # Clients in "shop" read shop's rules first: one for a payments host is switched; "*.local" there also covers
    # every other service, so switching it would send plaintext far beyond payments.
    kube.add(meshed_namespace("payments"),
             destination_rule("to-reviews", "shop", "reviews.payments.svc.cluster.local", "ISTIO_MUTUAL"),
             destination_rule("mesh-mtls", "shop", "*.local", "ISTIO_MUTUAL"))
    plan = plan_for(kube, "permissive-mtls payments")

    assert ("patch", "DestinationRule", "shop/to-reviews") in changed(plan)
    assert ("patch", "DestinationRule", "shop/mesh-mtls") not in changed(plan)
    [wide] = [n for n in plan.notes if "shop/mesh-mtls" in n]
    assert "clients in namespace shop" in wide and "leaves it alone" in wide


def test_rules_that_lose_to_meshbots_or_do_not_keep_mtls_are_not_named(kube: FakeKube):
    kube.add(meshed_namespace("payments"),
             destination_rule("wide", "payments", "*.local", "ISTIO_MUTUAL"),          # less specific: ours wins
             destination_rule("root", "istio-system", "*.local", "ISTIO_MUTUAL"),      # root rules are read last
             destination_rule("db", "shop", "db.shop.svc.cluster.local", "ISTIO_MUTUAL"),  # other hosts
             destination_rule("plain", "payments", "api", "DISABLE"),                 # already plaintext
             destination_rule("private", "shop", "reviews.payments.svc.cluster.local", "ISTIO_MUTUAL",
                              export_to=["payments"]))                                # not seen by shop's clients
    plan = plan_for(kube, "permissive-mtls payments")

    assert changed(plan) == [("create", "PeerAuthentication", f"payments/{EMERGENCY_POLICY}"),
                             ("create", "DestinationRule", f"payments/{PLAINTEXT_RULE}")]
    assert not any("DestinationRule" in n and "will keep mTLS" in n for n in plan.notes)


def test_a_private_root_namespace_rule_keeps_gateways_on_mtls_and_is_named(kube: FakeKube):
    kube.add(meshed_namespace("payments"),
             destination_rule("gateway-mtls", "istio-system", "*.payments.svc.cluster.local", "ISTIO_MUTUAL",
                              export_to=["."]))
    plan = plan_for(kube, "permissive-mtls payments")
    assert ("patch", "DestinationRule", "istio-system/gateway-mtls") in changed(plan)
    assert any("istio-system/gateway-mtls" in n and "gateways" in n for n in plan.notes)


def test_servers_only_adds_no_rule_and_plaintext_clients_adds_one_without_sidecars(kube: FakeKube):
    kube.add(meshed_namespace("payments"), namespace("legacy"))
    assert changed(plan_for(kube, "permissive-mtls payments --servers-only")) == [
        ("create", "PeerAuthentication", f"payments/{EMERGENCY_POLICY}")]
    assert changed(plan_for(kube, "permissive-mtls legacy --plaintext-clients")) == [
        ("create", "PeerAuthentication", f"legacy/{EMERGENCY_POLICY}"),
        ("create", "DestinationRule", f"legacy/{PLAINTEXT_RULE}")]


def test_mesh_wide_puts_the_rule_in_the_root_namespace_and_patches_every_rule_read_before_it(kube: FakeKube):
    kube.add(namespace("istio-system"), injected_pod("api-1", "shop"),
             destination_rule("api", "shop", "api", "ISTIO_MUTUAL"),
             destination_rule("external", "shop", "api.example.com", "SIMPLE"),
             destination_rule("everything", "istio-system", "*", "ISTIO_MUTUAL"))
    client = kube.client()
    plan = plan_for(kube, "permissive-mtls --mesh-wide")

    assert plan.action == "permissive-mtls --mesh"
    assert changed(plan) == [("create", "PeerAuthentication", f"istio-system/{EMERGENCY_POLICY}"),
                             ("create", "DestinationRule", f"istio-system/{PLAINTEXT_RULE}"),
                             ("patch", "DestinationRule", "shop/api")]
    assert plan.changes[1].body["spec"]["host"] == "*.local"
    assert apply(client, plan).ok
    assert apply(client, rollback_plan(plan)).ok
    assert kube.object("DestinationRule", "shop", "api")["spec"]["trafficPolicy"] == {"tls": {"mode": "ISTIO_MUTUAL"}}
    assert kube.object("DestinationRule", "istio-system", PLAINTEXT_RULE) is None


def test_authorization_policies_on_mtls_identities_are_named_as_the_risk(kube: FakeKube):
    kube.add(meshed_namespace("payments"),
             authorization_policy("from-shop", "payments", {"principals": ["cluster.local/ns/shop/sa/web"]}),
             authorization_policy("mesh-wide", "istio-system", {"namespaces": ["shop"]}),
             authorization_policy("by-ip", "payments", {"ipBlocks": ["10.0.0.0/8"]}))
    notes = plan_for(kube, "permissive-mtls payments").notes
    assert any("AuthorizationPolicy payments/from-shop (ALLOW) matches on principals" in n for n in notes)
    assert any("AuthorizationPolicy istio-system/mesh-wide" in n for n in notes)
    assert not any("by-ip" in n for n in notes)


def test_many_identity_policies_are_summed_up_so_the_other_notes_stay_visible(kube: FakeKube):
    kube.add(meshed_namespace("payments"),
             *(authorization_policy(f"p{i}", "payments", {"principals": ["cluster.local/ns/shop/sa/web"]})
               for i in range(6)))
    notes = [n for n in plan_for(kube, "permissive-mtls payments").notes
             if n.startswith("AuthorizationPolicy payments/") or "more AuthorizationPolicies" in n]
    assert len(notes) == 4 and notes[-1].startswith("3 more AuthorizationPolicies match on mTLS identities")


def test_a_destination_rule_changed_during_approval_stops_the_plan_before_any_write(kube: FakeKube):
    kube.add(meshed_namespace("payments"), destination_rule("reviews", "payments", "reviews", "ISTIO_MUTUAL"))
    client = kube.client()
    plan = plan_for(kube, "permissive-mtls payments")
    client.patch("DestinationRule", "payments", "reviews", {"spec": {"trafficPolicy": {"tls": {"mode": "MUTUAL"}}}})
    writes_before = len(kube.requests("POST")) + len(kube.requests("PATCH"))

    outcome = apply(client, plan)

    assert not outcome.ok and "DestinationRule payments/reviews changed since the plan was made" in outcome.error
    assert len(kube.requests("POST")) + len(kube.requests("PATCH")) == writes_before


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


# -- memory --------------------------------------------------------------------------------------------------


def istiod_deployment(limit: str | None = "2Gi", request: str | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if limit:
        resources["limits"] = {"memory": limit}
    if request:
        resources["requests"] = {"memory": request}
    body = deployment("istiod", "istio-system")
    body["spec"]["template"]["spec"]["containers"] = [
        {"name": "discovery", "image": "docker.io/istio/pilot:1.24.2", "resources": resources}]
    return body


@pytest.mark.parametrize("text, command", [
    ("memory istiod --limit 4Gi", "memory istiod -n istio-system --limit 4Gi"),
    ("memory istiod -n istio-canary --limit=4096Mi --request 2Gi",
     "memory istiod -n istio-canary --limit 4096Mi --request 2Gi"),
    ("memory payment prod --request 1Gi --container app", "memory payment -n prod --request 1Gi --container app"),
])
def test_memory_parses_to_one_canonical_command(text, command):
    assert parse_action(text.split()).command == command


@pytest.mark.parametrize("text, complaint", [
    ("memory istiod", "--limit"),
    ("memory istiod --limit lots", "not a memory quantity"),
    ("memory istiod --limit 4", "not a memory quantity"),  # 4 bytes: a typo, not a fix
    ("memory istiod --limit 1Gi --request 2Gi", "cannot be larger than the limit"),
    ("memory istiod --limit 4Gi --limit 8Gi", "given twice"),
    ("memory payment --limit 1Gi", "usage"),
])
def test_malformed_memory_requests_are_refused_with_the_usage(text, complaint):
    with pytest.raises(ActionUsageError, match=complaint):
        parse_action(text.split())


def test_memory_on_istiod_patches_the_discovery_container_and_rollback_restores_the_old_limit(kube: FakeKube):
    kube.add(namespace("istio-system"), istiod_deployment("2Gi"))
    plan = plan_for(kube, "memory istiod --limit 4Gi")
    assert plan.action == "memory istiod -n istio-system --limit 4Gi" and plan.reversible
    assert "memory limit 2Gi (2.0 GiB) -> 4Gi of container discovery" in plan.summary
    assert "+        memory: 4Gi" in plan_diff(plan) and "-        memory: 2Gi" in plan_diff(plan)
    assert apply(kube.client(), plan).ok and verify(kube.client(), plan).ok
    [container] = kube.object("Deployment", "istio-system", "istiod")["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["memory"] == "4Gi"
    assert container["image"] == "docker.io/istio/pilot:1.24.2", "the rest of the container is kept"
    assert apply(kube.client(), rollback_plan(plan)).ok
    [container] = kube.object("Deployment", "istio-system", "istiod")["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["memory"] == "2Gi"


def test_memory_notes_say_it_needs_only_the_api_server_and_that_a_pod_no_node_fits_stays_pending(kube: FakeKube):
    kube.add(namespace("istio-system"), istiod_deployment(limit=None, request="2048Mi"))
    plan = plan_for(kube, "memory istiod --limit 4Gi --request 4Gi")
    notes = " ".join(plan.notes)
    assert "API server only" in notes and "istiod need not be healthy" in notes
    assert "stays Pending" in notes and "manage-resources-containers" in notes
    assert "pilot.resources" in notes


def test_a_limit_without_a_request_says_the_scheduler_must_find_the_limit_free(kube: FakeKube):
    kube.add(namespace("istio-system"), istiod_deployment("2Gi"))
    assert any("uses the limit as its request" in n for n in plan_for(kube, "memory istiod --limit 4Gi").notes)


def test_memory_refuses_an_unknown_container_a_paused_deployment_and_a_no_op(kube: FakeKube):
    paused = deployment("payment", "prod", paused=True)
    kube.add(namespace("istio-system"), istiod_deployment("4Gi"), namespace("prod"), paused)
    with pytest.raises(UserError, match="no container sidecar"):
        plan_for(kube, "memory istiod --limit 8Gi --container sidecar")
    with pytest.raises(UserError, match="paused"):
        plan_for(kube, "memory payment -n prod --limit 1Gi")
    with pytest.raises(UserError, match="already has that memory"):
        plan_for(kube, "memory istiod --limit 4Gi")


def test_a_container_edited_after_the_plan_stops_the_memory_change_before_any_write(kube: FakeKube):
    kube.add(namespace("istio-system"), istiod_deployment("2Gi"))
    plan = plan_for(kube, "memory istiod --limit 4Gi")
    edited = istiod_deployment("3Gi")
    kube.add(edited)
    outcome = apply(kube.client(), plan)
    assert not outcome.ok and "changed since the plan was made" in (outcome.error or "")
