"""An approval card shows the change: every changed value, blast radius, preconditions and their state, the
policies a bypass switches off, whether a restart alone helps, the undo and its risk; a rollback card says what
breaks if the cause is still there and offers "Roll back later".  Plans come from kmock; cards are rendered."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from bot.approvals.blocks import ROLL_BACK_LATER, request_message
from bot.approvals.rule import RequestState
from bot.approvals.store import ApprovalRequest
from commands.actions import parse_action, plan_action, rollback_plan
from commands.actions.annotate import annotate_plan, annotate_rollback, needs_and_scope
from commands.actions.dependencies import Diagnosis, evaluate_needs, rollback_needs
from commands.actions.plan import Plan
from commands.actions.review import policies_switched_off, restart_judgement
from commands.findings import Remediation
from commands.preconditions import Dependency
from tests.support.kube import FakeKube
from tests.test_action_preconditions import root_expired
from tests.test_actions import (
    authorization_policy,
    deployment,
    destination_rule,
    injected_pod,
    istiod_deployment,
    meshed_namespace,
    namespace,
)
from tests.test_preconditions import istiod_oomkilled

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
ALL = ("status", "proxy-status", "certs")


def card_request(plan: Plan, *, rollback_of: int | None = None, state: RequestState = RequestState.PENDING,
                 **fields: Any) -> ApprovalRequest:
    return ApprovalRequest(
        id=7, incident_id=1, action=plan.action, plan=plan, plan_hash=plan.hash, dry_run={"ok": True},
        requester="UALICE", reason="", channel="CINCIDENT", message_entry=None, state=state, required=2,
        created_at=NOW, expires_at=NOW + timedelta(minutes=30), decided_by=fields.pop("decided_by", None),
        result=fields.pop("result", None), verification=fields.pop("verification", None), rollback_of=rollback_of,
        rolled_back_by=None, approvals=())


def card_text(request: ApprovalRequest) -> str:
    return json.dumps(request_message(request, NOW).blocks, ensure_ascii=False)


def planned(kube: FakeKube, text: str, *findings) -> Plan:
    target = parse_action(text.split())
    plan = plan_action(kube.client(), target, NOW)
    needs, scope = needs_and_scope(target)
    checked = evaluate_needs(needs, scope, Diagnosis(tuple(findings), ALL))
    return annotate_plan(plan, target, kube.client(), checked, list(findings))


def payments(kube: FakeKube) -> None:
    kube.add(meshed_namespace("payments"), namespace("istio-system"), deployment("reviews", "payments"),
             deployment("api", "payments"), injected_pod("reviews-1", "payments"),
             destination_rule("reviews", "payments", "reviews.payments.svc.cluster.local", "ISTIO_MUTUAL"))


def test_every_changed_mode_and_tls_setting_is_on_the_card_even_when_the_diff_is_collapsed(kube: FakeKube):
    payments(kube)
    text = card_text(card_request(planned(kube, "permissive-mtls payments")))
    assert "spec.mtls.mode: \\\"PERMISSIVE\\\"" in text
    assert "spec.trafficPolicy.tls.mode: \\\"DISABLE\\\"" in text
    assert "spec.trafficPolicy.tls.mode: \\\"ISTIO_MUTUAL\\\" \u2192 \\\"DISABLE\\\"" in text  # the patched rule


def test_the_memory_card_shows_the_one_value_that_changes(kube: FakeKube):
    kube.add(namespace("istio-system"), istiod_deployment("2Gi"))
    text = card_text(card_request(planned(kube, "memory istiod --limit 4Gi")))
    assert "containers[discovery].resources.limits.memory: \\\"2Gi\\\" \u2192 \\\"4Gi\\\"" in text


def test_the_card_names_the_blast_radius_in_workloads_and_pods(kube: FakeKube):
    payments(kube)
    text = card_text(card_request(planned(kube, "permissive-mtls payments")))
    assert "Workloads: 2 Deployment(s) in namespace payments (api, reviews)" in text
    assert "Pods: 1 running now (reviews-1)" in text


def test_preconditions_are_listed_with_their_state(kube: FakeKube):
    payments(kube)
    text = card_text(card_request(planned(kube, "permissive-mtls payments")))
    assert "Kubernetes API server reachable: met" in text and "istiod Ready and pushing config: met" in text


def test_an_unmet_precondition_puts_its_own_fix_first_above_the_buttons(kube: FakeKube):
    payments(kube)
    blocks = request_message(card_request(planned(kube, "permissive-mtls payments", istiod_oomkilled())), NOW).blocks
    header = json.dumps(blocks[0])
    assert "Not yet:" in header and "raise istiod's memory limit" in header
    assert "no proxy can receive this change" in header
    assert "istiod Ready and pushing config: failing" in json.dumps(blocks)


def test_bypass_lists_every_authorization_policy_it_switches_off(kube: FakeKube):
    payments(kube)
    kube.add(authorization_policy("reviews-callers", "payments", {"principals": ["cluster.local/ns/shop/sa/web"]}),
             authorization_policy("mesh-wide", "istio-system", {"namespaces": ["payments"]}))
    text = card_text(card_request(planned(kube, "bypass reviews -n payments")))
    assert "Bypass switches off" in text
    assert "AuthorizationPolicy payments/reviews-callers (ALLOW)" in text
    assert "AuthorizationPolicy istio-system/mesh-wide (ALLOW)" in text


def test_a_policy_selecting_other_workloads_is_not_listed_for_a_bypass(kube: FakeKube):
    payments(kube)
    policy = authorization_policy("api-only", "payments", {"namespaces": ["shop"]})
    policy["spec"]["selector"] = {"matchLabels": {"app": "api"}}
    kube.add(policy)
    assert policies_switched_off(kube.client(), parse_action("bypass reviews -n payments".split()), "reviews") == ()


def test_restart_of_an_oomkilled_istiod_says_a_restart_alone_wont_help_and_offers_the_memory_action():
    oom = replace(istiod_oomkilled(), remediation=Remediation("Raise it", action="memory istiod -n istio-system --limit 4096Mi"))
    judgement = restart_judgement(parse_action("restart istiod".split()), "istiod", [oom])
    assert judgement.startswith("Won't help alone: it was OOMKilled")
    assert "`/mesh memory istiod -n istio-system --limit 4096Mi`" in judgement


def test_restart_of_a_healthy_workload_may_help(kube: FakeKube):
    payments(kube)
    text = card_text(card_request(planned(kube, "restart reviews -n payments")))
    assert "Restart alone:* May help" in text


def test_the_undo_and_its_risk_are_on_the_card_before_execution(kube: FakeKube):
    payments(kube)
    text = card_text(card_request(planned(kube, "permissive-mtls payments")))
    assert "Undo:* Rollback restores the previous mTLS modes" in text
    assert "Risk:* If the certificates are still broken" in text


def test_a_rollback_card_says_what_breaks_while_the_root_is_still_expired_and_offers_roll_back_later(kube: FakeKube):
    payments(kube)
    original = planned(kube, "permissive-mtls payments")
    target = parse_action(original.action.split())

    def still_broken(needs, scope):
        """A diagnosis run now that still finds the mesh root expired."""
        return evaluate_needs(needs, scope, Diagnosis((root_expired(),), ALL)), []
    assert rollback_needs(target)[-1] == Dependency.CA
    rollback = annotate_rollback(rollback_plan(original), original, still_broken)
    message = request_message(card_request(rollback, rollback_of=3), NOW)
    text = json.dumps(message.blocks, ensure_ascii=False)
    assert "If you roll back while the cause is still there" in text
    assert "mesh CA issuing usable certificates: failing" in text and "Mesh root certificate expired" in text
    assert "brings the failure back" in text
    assert ROLL_BACK_LATER in text and "Roll back later" in text


def test_a_rollback_left_for_later_says_the_change_stays():
    plan = Plan("rollback of permissive-mtls payments", "Undo", ())
    request = card_request(plan, rollback_of=3, state=RequestState.REJECTED, decided_by="UBOB",
                           result={"ok": False, "deferred": True, "applied": 0})
    text = card_text(request)
    assert "Rollback left for later" in text and "<@UBOB>" in text and "#3's change stays in place" in text


def test_after_execution_the_card_shows_the_effect_seen_not_just_the_objects():
    plan = Plan("permissive-mtls payments", "Accept plaintext", ())
    verification = {"ok": True, "lines": ["\u2705 PeerAuthentication payments/x: create in place"],
                    "effect": {"outcome": "not seen", "lines": ["no proxy has the new config: istiod is not pushing"]}}
    text = card_text(card_request(plan, state=RequestState.SUCCEEDED, result={"ok": True, "applied": 1, "steps": []},
                                  verification=verification))
    assert "Effect: not seen" in text and "istiod is not pushing" in text
