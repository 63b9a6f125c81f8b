"""An action's preconditions, each met / failing / not checked, and every dependency edge an action has:
refused (its own fix first) when the dependency fails, unaffected when it does not depend on it."""

from __future__ import annotations

import re

import pytest

from commands import codes
from commands.actions import parse_action
from commands.actions.dependencies import (
    Diagnosis,
    State,
    checks_for,
    effect_of_target,
    evaluate,
    fix_first_text,
    rollback_needs,
    unmet,
)
from commands.actions.memory import DEPENDS_ON, MAY_STAY_PENDING, REQUEST_FOLLOWS_LIMIT
from commands.actions.review import UNDO, restart_judgement
from commands.findings import Remediation
from commands.preconditions import Dependency, Effect
from tests.test_preconditions import ca_failing, istiod_oomkilled, revision_unserved, webhook_down

ALL_CHECKS = ("status", "proxy-status", "certs")


def diagnosis(*findings, checks=ALL_CHECKS, error=None) -> Diagnosis:
    return Diagnosis(tuple(findings), checks, error)


def states(action: str, *findings, checks=ALL_CHECKS, error=None) -> dict[Dependency, State]:
    target = parse_action(action.split())
    namespace = None if target.scope == "mesh" else target.namespace
    return {p.dependency: p.state for p in evaluate(effect_of_target(target), namespace,
                                                    diagnosis(*findings, checks=checks, error=error))}


def root_expired():
    return codes.finding("MB3001", origin="ConfigMap istio-system/istio-ca-root-cert", what="Mesh root certificate",
                         ago="3 hours", not_after="2026-11-23T00:00:00Z", evidence={"role": "mesh-root"},
                         remediation=Remediation("Renew the mesh root (see the certs finding)"))


def api_unreachable():
    return codes.finding("MB0002", origin="cluster", verb="list", resource="pods", scope="", reason="connection refused")


@pytest.mark.parametrize("action, effect", [
    ("permissive-mtls prod", Effect.CONFIG),
    ("permissive-mtls --mesh", Effect.CONFIG),
    ("bypass payment -n prod", Effect.BYPASS),
    ("bypass namespace prod", Effect.BYPASS),
    ("restart payment -n prod", Effect.NEW_PODS),
    ("restart istiod", Effect.CONTROL_PLANE),
    ("memory istiod --limit 4Gi", Effect.CONTROL_PLANE),
    ("memory payment -n prod --limit 1Gi", Effect.NEW_PODS),
])
def test_every_action_has_the_effect_that_decides_its_dependencies(action, effect):
    assert effect_of_target(parse_action(action.split())) == effect


def test_a_healthy_diagnosis_meets_every_precondition_of_a_config_change():
    assert states("permissive-mtls prod") == {Dependency.API_SERVER: State.MET, Dependency.ISTIOD: State.MET}


def test_config_change_fails_its_istiod_precondition_when_istiod_is_oomkilled_and_names_the_fix_first():
    checked = evaluate(Effect.CONFIG, "prod", diagnosis(istiod_oomkilled()))
    [istiod] = unmet(checked)
    assert istiod.dependency == Dependency.ISTIOD and istiod.code == "MB1002"
    text = fix_first_text(istiod)
    assert text.index("raise istiod's memory limit") < text.index("no proxy can receive this change")
    assert "first" in text


def test_the_memory_action_on_istiod_is_not_blocked_by_istiod_being_down():
    assert states("memory istiod --limit 4Gi", istiod_oomkilled()) == {Dependency.API_SERVER: State.MET}


def test_restarting_a_workload_fails_on_an_expired_root_because_new_pods_get_useless_certificates():
    got = states("restart payment -n prod", root_expired())
    assert got[Dependency.CA] == State.FAILING
    assert got[Dependency.ISTIOD] == State.MET


def test_restarting_a_workload_fails_when_the_ca_cannot_sign():
    assert states("restart payment -n prod", ca_failing())[Dependency.CA] == State.FAILING


def test_bypass_fails_while_the_injection_webhook_is_down_in_its_namespace_only():
    assert states("bypass payment -n prod", webhook_down(("prod",)))[Dependency.INJECTION] == State.FAILING
    assert states("bypass payment -n shop", webhook_down(("prod",)))[Dependency.INJECTION] == State.MET


def test_bypass_does_not_depend_on_istiod_or_the_ca():
    got = states("bypass payment -n prod", istiod_oomkilled(), root_expired())
    assert Dependency.ISTIOD not in got and Dependency.CA not in got


def test_a_restart_fails_when_no_webhook_serves_the_namespaces_revision():
    assert states("restart payment -n prod", revision_unserved("prod"))[Dependency.REVISION] == State.FAILING


def test_an_unreachable_api_server_fails_every_change():
    for action in ("permissive-mtls prod", "bypass payment -n prod", "memory istiod --limit 4Gi"):
        assert states(action, api_unreachable())[Dependency.API_SERVER] == State.FAILING


def test_a_dependency_whose_check_did_not_run_is_not_checked_and_says_which():
    checked = evaluate(Effect.NEW_PODS, "prod", diagnosis(checks=("status", "proxy-status")))
    ca = next(p for p in checked if p.dependency == Dependency.CA)
    assert ca.state == State.NOT_CHECKED and "certs" in ca.detail


def test_a_diagnosis_that_could_not_run_leaves_everything_not_checked_with_why():
    got = evaluate(Effect.CONFIG, "prod", diagnosis(error="cannot reach the API server: timed out"))
    assert {p.state for p in got} == {State.NOT_CHECKED}
    assert all("timed out" in p.detail for p in got)


def test_new_pods_are_checked_with_certs_and_config_without():
    assert "certs" in checks_for(Effect.NEW_PODS)
    assert "certs" not in checks_for(Effect.CONFIG)


def test_rolling_back_permissive_mtls_depends_on_the_ca_the_change_worked_around():
    needs = rollback_needs(parse_action("permissive-mtls prod".split()))
    assert Dependency.CA in needs and Dependency.ISTIOD in needs


# -- every judgement a card shows cites where it comes from (the remediation audit, for actions) -------------

SOURCE = re.compile(r"https://\S+|\b(?:pilot|security|pkg|manifests)/\S+\.(?:go|yaml)\b")


def card_judgements() -> list[str]:
    target = parse_action("restart payment -n prod".split())
    oom = codes.finding("MB1002", origin="Pod prod/payment-7d9f8c6b5-x2x4k", role="workload", container="app",
                        pod="prod/payment-7d9f8c6b5-x2x4k", restarts=3, limit="1Gi")
    crash = codes.finding("MB1003", origin="Pod prod/payment-7d9f8c6b5-x2x4k", role="workload", pod="prod/payment-7d9f8c6b5-x2x4k",
                          container="app", restarts=9, reason="CrashLoopBackOff")
    judgements = [restart_judgement(target, "payment", findings) for findings in ([oom], [crash], [])]
    return [*judgements, *(risk for _, risk in UNDO.values() if risk), DEPENDS_ON, MAY_STAY_PENDING,
            REQUEST_FOLLOWS_LIMIT]


@pytest.mark.parametrize("text", card_judgements())
def test_every_judgement_on_an_approval_card_cites_its_source(text):
    assert SOURCE.search(text), text
