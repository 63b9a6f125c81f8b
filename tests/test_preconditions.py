"""A step is only offered first when what it depends on is healthy: each dependency edge, refused or reordered."""

from __future__ import annotations

import pytest

from commands import codes
from commands.findings import Remediation
from commands.preconditions import Dependency, Effect, MeshHealth, effect_of, gate, gate_findings

ISTIOD_POD = "Pod istio-system/istiod-7d4b9c8f5-abcde"


def istiod_oomkilled():
    return codes.finding(
        "MB1002", origin=ISTIOD_POD, role="istiod", container="discovery", pod="istio-system/istiod-7d4b9c8f5-abcde",
        restarts=7, limit="2Gi", evidence={"role": "istiod"},
        remediation=Remediation("Raise istiod's memory limit (a restart alone OOMs again)",
                                command="kubectl -n istio-system set resources deployment/istiod -c discovery "
                                        "--limits=memory=4Gi"))


def ca_failing():
    return codes.finding(
        "MB3020", origin=ISTIOD_POD, pod="istio-system/istiod-7d4b9c8f5-abcde", errors=40, requests=40,
        causes="40 signing errors",
        remediation=Remediation("Read istiod's CA errors: kubectl -n istio-system logs deploy/istiod | grep -i csr",
                                command="kubectl -n istio-system logs deploy/istiod"))


def webhook_down(namespaces=("prod",)):
    return codes.finding(
        "MB1040", origin="MutatingWebhookConfiguration istio-sidecar-injector",
        webhook="istio-sidecar-injector", reason="service istiod has no ready endpoints",
        scope=", ".join(namespaces), evidence={"namespaces": list(namespaces)},
        remediation=Remediation("Bring istiod back: kubectl -n istio-system get pods -l app=istiod",
                                command="kubectl -n istio-system get pods -l app=istiod"))


def revision_unserved(namespace="prod"):
    return codes.finding(
        "MB1041", origin=f"Namespace {namespace}", namespace=namespace, revision="1-24", served="[default]",
        remediation=Remediation("Label the namespace for a served revision",
                                command=f"kubectl label namespace {namespace} istio.io/rev=default --overwrite"))


def ageing_workload_cert(namespace="prod", pod="payment-7d9f8c6b5-x2x4k"):
    return codes.finding(
        "MB3006", origin=f"Pod {namespace}/{pod}", what=f"Workload certificate of {namespace}/{pod}", percent=83,
        lifetime="24h", left="4h",
        remediation=Remediation("Restart the pod so it gets a fresh certificate",
                                command=f"kubectl -n {namespace} delete pod {pod}"))


RESTART_POD = Remediation("Restart the pod", command="kubectl -n prod delete pod payment-7d9f8c6b5-x2x4k")
ROLLOUT = Remediation("Roll the workload", command="kubectl -n prod rollout restart deployment/payment")
PERMISSIVE = Remediation("Accept plaintext in prod", action="permissive-mtls prod")
BYPASS = Remediation("Take payment out of the mesh", action="bypass payment -n prod")
RESTART_ISTIOD = Remediation("Restart istiod", action="restart istiod -n istio-system")
READ = Remediation("Look at the config", command="istioctl proxy-config cluster payment-7d9f8c6b5-x2x4k -n prod")


@pytest.mark.parametrize(("step", "effect"), [
    (RESTART_POD, Effect.NEW_PODS), (ROLLOUT, Effect.NEW_PODS), (PERMISSIVE, Effect.CONFIG),
    (BYPASS, Effect.BYPASS), (RESTART_ISTIOD, Effect.CONTROL_PLANE), (READ, Effect.READ_ONLY),
    (Remediation("x", command="kubectl -n istio-system set resources deployment/istiod -c discovery "
                              "--limits=memory=4Gi"), Effect.CONTROL_PLANE),
    (Remediation("x", command="kubectl apply -f permissive.yaml"), Effect.CONFIG),
    (Remediation("x", command="kubectl -n prod patch destinationrule payment --type merge -p '{}'"), Effect.CONFIG),
    (Remediation("x", command="kubectl -n prod get authorizationpolicy -o yaml"), Effect.READ_ONLY),
    (Remediation("x", action="restart payment -n prod"), Effect.NEW_PODS),
    (Remediation("x", action="memory istiod -n istio-system --limit 4Gi"), Effect.CONTROL_PLANE),
    (Remediation("x", action="memory payment -n prod --limit 1Gi"), Effect.NEW_PODS),
])
def test_each_step_is_classified_by_what_it_does_to_the_mesh(step, effect):
    assert effect_of(step) == effect


def test_pod_restart_is_refused_while_the_ca_fails_to_sign_and_the_ca_fix_comes_first():
    health = MeshHealth.from_findings([ca_failing()])
    gated = gate(RESTART_POD, health)
    assert "delete pod" not in (gated.command or "")
    assert gated.summary.startswith("Not yet: the mesh CA cannot issue usable certificates")
    assert gated.command == "kubectl -n istio-system logs deploy/istiod"
    assert "Then: restart the pod" in gated.summary


def test_pod_restart_is_refused_while_istiod_is_down_and_istiods_memory_fix_comes_first():
    gated = gate(ROLLOUT, MeshHealth.from_findings([istiod_oomkilled()]))
    assert "rollout restart" not in (gated.command or "")
    assert "set resources deployment/istiod" in (gated.command or "")
    assert "istiod is not serving" in gated.summary


def test_config_change_is_refused_while_istiod_is_down_because_no_proxy_can_receive_it():
    gated = gate(PERMISSIVE, MeshHealth.from_findings([istiod_oomkilled()]))
    assert gated.action is None
    assert "no proxy can receive this change" in gated.summary
    assert "Then: accept plaintext in prod" in gated.summary


def test_config_change_is_not_blocked_by_a_failing_ca_alone():
    assert gate(PERMISSIVE, MeshHealth.from_findings([ca_failing()])) is PERMISSIVE


def test_pod_restart_is_refused_in_a_namespace_the_unreachable_webhook_selects():
    gated = gate(RESTART_POD, MeshHealth.from_findings([webhook_down(("prod",))]))
    assert "refuses to create the new pods" in gated.summary


def test_pod_restart_in_a_namespace_the_webhook_does_not_select_is_not_blocked_by_it():
    step = Remediation("Restart", command="kubectl -n batch delete pod worker-1")
    assert gate(step, MeshHealth.from_findings([webhook_down(("prod",))])) is step


def test_bypass_needs_the_injection_webhook_too():
    gated = gate(BYPASS, MeshHealth.from_findings([webhook_down(("prod",))]))
    assert gated.action is None and "sidecar-injector webhook" in gated.summary


def test_bypass_does_not_wait_for_the_ca():
    assert gate(BYPASS, MeshHealth.from_findings([ca_failing()])) is BYPASS


def test_restart_is_refused_in_a_namespace_whose_revision_no_webhook_serves():
    gated = gate(ROLLOUT, MeshHealth.from_findings([revision_unserved("prod")]))
    assert "istio.io/rev=default" in (gated.command or "")
    assert "start without a sidecar" in gated.summary


def test_restart_elsewhere_is_not_blocked_by_another_namespaces_revision():
    step = Remediation("Roll", command="kubectl -n batch rollout restart deployment/worker")
    assert gate(step, MeshHealth.from_findings([revision_unserved("prod")])) is step


def test_restarting_istiod_itself_is_never_blocked_by_istiod_being_down():
    assert gate(RESTART_ISTIOD, MeshHealth.from_findings([istiod_oomkilled()])) is RESTART_ISTIOD


def test_read_only_steps_are_never_blocked():
    health = MeshHealth.from_findings([istiod_oomkilled(), ca_failing(), webhook_down(), revision_unserved()])
    assert gate(READ, health) is READ


def test_istiod_down_blocks_before_the_ca_because_it_is_the_more_fundamental_dependency():
    health = MeshHealth.from_findings([ca_failing(), istiod_oomkilled()])
    assert [b.dependency for b in health.blockers(RESTART_POD)][:2] == [Dependency.ISTIOD, Dependency.CA]
    assert "istiod is not serving" in gate(RESTART_POD, health).summary


def test_gating_findings_rewrites_the_dangerous_command_and_records_what_blocked_it():
    findings = gate_findings([ca_failing(), ageing_workload_cert()])
    cert = next(f for f in findings if f.code == "MB3006")
    assert "delete pod" not in (cert.remediation.command or "")
    assert cert.evidence["blocked_by"] == ["ca"]
    ca = next(f for f in findings if f.code == "MB3020")
    assert ca.remediation == ca_failing().remediation


def test_gating_findings_leaves_everything_alone_when_the_control_plane_is_healthy():
    findings = [ageing_workload_cert()]
    assert gate_findings(findings) == findings


def test_an_expired_mesh_root_counts_as_a_failing_ca_for_new_pods():
    root = codes.finding("MB3001", origin="ConfigMap istio-system/istio-ca-root-cert", what="Mesh root CA",
                         ago="26 minutes", not_after="2026-12-07T02:41:00Z", evidence={"role": "mesh-root"})
    assert MeshHealth.from_findings([root]).dependency_failing(Dependency.CA)


def test_an_expired_gateway_certificate_does_not_block_restarts():
    gateway = codes.finding("MB3001", origin="Secret istio-system/shop-cert", what="Gateway certificate",
                            ago="2 days", not_after="2026-12-05T00:00:00Z", evidence={"role": "gateway"})
    assert gate(RESTART_POD, MeshHealth.from_findings([gateway])) is RESTART_POD
