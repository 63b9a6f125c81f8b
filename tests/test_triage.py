"""Triage: which finding explains which, what to do first.  Pure: findings in, causes out."""

from __future__ import annotations

import json
import subprocess
import sys

from commands import codes
from commands.catalog import default_checks
from commands.explanations import Confidence
from commands.findings import Remediation, by_severity
from commands.report import triage_lines
from commands.triage import scoped, shared_cause, triage

CLUSTER_TO_PAYMENT = "outbound|8080||payment-service.prod.svc.cluster.local"


def expired_root():
    return codes.finding("MB3001", origin="Secret istio-system/istio-ca-secret", what='Mesh root CA "CN=Istio CA"',
                         ago="26 minutes", not_after="2026-11-24T02:41:00Z")


def expired_gateway_cert():
    return codes.finding("MB3001", origin="Secret istio-system/shop-tls", what='Gateway TLS certificate "CN=shop"',
                         ago="2 hours", not_after="2026-11-24T02:41:00Z")


def root_mismatch(namespace="legacy"):
    return codes.finding("MB3010", origin=f"ConfigMap {namespace}/istio-ca-root-cert", namespace=namespace,
                         expected="0C:D9")


def sidecar_crash_loop(pod="payment-service-7d9f8c6b5-x2x4k", namespace="prod"):
    return codes.finding("MB1011", origin=f"Pod {namespace}/{pod}", pod=f"{namespace}/{pod}", restarts=25,
                         remediation=Remediation(summary="bypass", action=f"bypass payment-service -n {namespace}"))


def upstream_503s(cluster=CLUSTER_TO_PAYMENT, caller="prod/api-service-6b7c9d8f5-k2m4p"):
    service = cluster.rsplit("|", 1)[-1].split(".svc.")[0].replace(".", " in ", 1)
    return codes.finding("MB4002", origin=f"Pod {caller}", pod=caller, percent="92.9", service=service,
                         errors=1180, total=1270, breakdown="UH 1180", evidence={"cluster": cluster})


def istiod_oomkilled():
    pod = "istio-system/istiod-5d8f7c9b6-qx7wz"
    return codes.finding("MB1002", origin=f"Pod {pod}", role="istiod", container="discovery", pod=pod,
                         restarts=7, limit="2Gi")


def istiod_not_ready():
    pod = "istio-system/istiod-5d8f7c9b6-qx7wz"
    return codes.finding("MB1001", origin=f"Pod {pod}", role="istiod", pod=pod, phase="Running",
                         consequence="sidecars get no config")


def stale_proxy(last_error=None):
    evidence = {"last_error": last_error} if last_error else {}
    return codes.finding("MB2001", origin="Pod prod/api-service-6b7c9d8f5-z8n3q", proxy="api-service.prod",
                         types="CDS", evidence=evidence)


def envoy_memory_critical():
    return codes.finding("MB4005", origin="Pod prod/api-service-6b7c9d8f5-k2m4p", pod="prod/api-service",
                         memory="860 MiB", threshold="500 MiB")


def test_expired_root_explains_crash_looping_sidecars_and_503s_through_the_chain():
    root, crash, errors = expired_root(), sidecar_crash_loop(), upstream_503s()
    # A diagnosis arrives in the registry's report order (status before envoy); triage keeps it.
    result = triage(by_severity([errors, crash, root], default_checks().report_order()))
    assert result.top.finding == root
    assert [f.code for f in result.top.explains] == ["MB1011", "MB4002"]
    assert result.top.explains_line == "explains 3 of 3 errors (2 other findings)"
    assert [c.finding for c in result.causes] == [root]


def test_first_step_for_an_expired_root_is_permissive_mtls_in_the_most_affected_namespace():
    result = triage([expired_root(), sidecar_crash_loop(), upstream_503s()])
    assert result.top.first_step.action == "permissive-mtls prod"
    assert "never delete istio-ca-secret" in result.top.first_step.summary


def test_root_mismatch_takes_its_namespace_from_the_finding_not_from_elsewhere():
    result = triage([root_mismatch("legacy"), upstream_503s()])
    cause = next(c for c in result.causes if c.finding.code == "MB3010")
    assert cause.first_step.action == "permissive-mtls legacy"


def test_root_mismatch_in_one_namespace_does_not_explain_503s_to_another():
    mismatch, errors = root_mismatch("legacy"), upstream_503s()
    result = triage([mismatch, errors])
    assert errors not in result.cause_of(mismatch).explains
    assert len(result.causes) == 2


def test_expired_gateway_certificate_is_not_taken_for_the_mesh_root():
    gateway, crash = expired_gateway_cert(), sidecar_crash_loop()
    result = triage([gateway, crash])
    assert crash not in result.cause_of(gateway).explains


def test_oomkilled_istiod_explains_stale_proxies_and_its_own_readiness():
    oom, not_ready, stale = istiod_oomkilled(), istiod_not_ready(), stale_proxy()
    result = triage([stale, not_ready, oom])
    assert result.top.finding == oom
    assert [f.code for f in result.top.explains] == ["MB1001", "MB2001"]
    assert result.top.confidence == Confidence.HIGH


def test_oomkilled_istiod_first_step_raises_the_memory_limit_instead_of_a_restart():
    step = triage([istiod_oomkilled()]).top.first_step
    assert "--limits=memory=" in step.command
    assert step.action is None


def test_a_nacked_proxy_is_not_blamed_on_istiod():
    nack = stale_proxy(last_error="Proto constraint validation failed")
    result = triage([istiod_oomkilled(), nack])
    assert nack not in result.cause_of(istiod_oomkilled()).explains


def test_crash_looping_workload_explains_its_callers_503s_but_not_another_services():
    crash = sidecar_crash_loop()
    own = upstream_503s()
    other = upstream_503s(cluster="outbound|80||orders.prod.svc.cluster.local")
    result = triage([crash, own, other])
    assert result.cause_of(crash).explains == (own,)
    assert result.cause_of(other).finding == other


def test_independent_problems_stay_separate_causes_ordered_by_what_they_explain():
    result = triage([envoy_memory_critical(), istiod_oomkilled(), istiod_not_ready(), stale_proxy()])
    assert [c.finding.code for c in result.causes] == ["MB1002", "MB4005"]


def test_warnings_that_explain_nothing_are_not_causes():
    result = triage([stale_proxy()])
    assert result.causes == ()


def test_triage_serialises_to_plain_data_for_json():
    data = triage([expired_root(), sidecar_crash_loop()]).to_list()
    assert data[0]["finding"] == {"code": "MB3001", "origin": "Secret istio-system/istio-ca-secret"}
    assert data[0]["first_step"]["action"] == "permissive-mtls prod"
    assert data[0]["explained"] == [{"code": "MB1011", "origin": "Pod prod/payment-service-7d9f8c6b5-x2x4k"}]


def test_an_error_istio_reports_on_each_resource_involved_is_one_line_naming_them_all():
    # IST0109 is reported on every VirtualService of the conflict, with the same text (Istio's
    # pkg/config/analysis/analyzers/virtualservice/conflictingmeshgatewayhosts.go).
    conflict = [codes.finding("IST0109", origin=f"VirtualService prod/{name}",
                              virtual_services="prod/order-canary,prod/order-routes",
                              host="*/order-service.prod.svc.cluster.local") for name in ("order-canary", "order-routes")]
    lines = triage_lines(triage([*conflict, envoy_memory_critical()]))

    assert lines[0] == "Errors, none explaining another:"
    [conflict_line] = [line for line in lines if "order-service" in line]
    assert conflict_line.endswith("(2 findings: VirtualService prod/order-canary, VirtualService prod/order-routes)")
    [memory_line] = [line for line in lines if "860 MiB" in line]
    assert "findings:" not in memory_line  # an error reported once stays one plain line


def test_bundled_outage_puts_istiods_memory_fix_first_because_the_traffic_remedy_waits_on_it():
    out = subprocess.run([sys.executable, "-m", "bot.cli", "demo", "-o", "json"], capture_output=True, text=True,
                         check=True).stdout
    first, second = json.loads(out)["triage"][:2]
    assert first["finding"]["code"] == "MB1002"
    assert "set resources deployment/istiod" in first["first_step"]["command"]
    assert "MB3001:Secret istio-system/istio-ca-secret" in first["unblocks"]
    assert second["finding"] == {"code": "MB3001", "origin": "Secret istio-system/istio-ca-secret"}
    assert second["first_step"]["summary"].startswith("Not yet: istiod is not serving")
    assert "restore traffic in prod first" in second["first_step"]["summary"]
    text = subprocess.run([sys.executable, "-m", "bot.cli", "demo"], capture_output=True, text=True,
                          check=True).stdout
    causes = text.index("Probable causes")
    assert causes < text.index("Error [MB1001]")
    assert "1. [high confidence] istiod container discovery" in text[causes:]


# -- the expired root and istiod's own certificate -----------------------------------------------

def test_expired_mesh_root_explains_proxies_that_cannot_sync_with_istiod():
    root, stale = expired_root(), stale_proxy()
    result = triage([root, stale])
    assert stale in result.cause_of(root).explains
    assert "proxies cannot verify istiod's certificate" in " ".join(result.cause_of(root).reasons)


def test_a_root_mismatch_in_one_namespace_does_not_explain_proxies_failing_to_sync():
    mismatch, stale = root_mismatch("legacy"), stale_proxy()
    result = triage([mismatch, stale])
    assert stale not in result.cause_of(mismatch).explains


def test_a_nacking_proxy_is_not_blamed_on_the_expired_root():
    nack = stale_proxy(last_error="Proto constraint validation failed")
    result = triage([expired_root(), nack])
    assert nack not in result.cause_of(expired_root()).explains


def test_a_cause_another_causes_step_waits_on_comes_first_and_the_waiting_step_says_so():
    # The expired root's first step (permissive mTLS) is new config, which only istiod can push; istiod is
    # OOMKilled, so its memory fix leads and the root's step waits for it.
    result = triage([istiod_oomkilled(), istiod_not_ready(), stale_proxy(), expired_root()])
    assert [c.finding.code for c in result.causes] == ["MB1002", "MB3001"]
    istiod, root = result.causes
    assert istiod.unblocks == (root.key,)
    assert root.first_step.action is None
    assert root.first_step.summary.startswith("Not yet: istiod is not serving")


def test_without_dependencies_the_cause_explaining_more_errors_leads():
    # A crash-looping sidecar explains one caller's 503s (two errors); a lone error explains only itself.
    crash, callers = sidecar_crash_loop(), upstream_503s()
    result = triage([envoy_memory_critical(), crash, callers])
    assert result.causes[0].finding is crash
    assert result.causes[0].explained_errors > result.causes[1].explained_errors


# -- one alert's scope -----------------------------------------------------------------------------

def test_scope_keeps_a_cause_elsewhere_that_explains_findings_here_and_counts_the_rest_as_elsewhere():
    root, crash, mismatch = expired_root(), sidecar_crash_loop(), root_mismatch("legacy")
    view = scoped(triage([root, crash, mismatch]), ["prod"])
    assert [c.finding for c in view.causes] == [root]
    assert crash in view.findings and root in view.findings
    assert view.elsewhere == (mismatch,)
    assert view.elsewhere_namespaces == ("legacy",)


def test_scope_of_an_alert_about_no_namespace_is_everything():
    result = triage([expired_root(), root_mismatch("legacy")])
    view = scoped(result, [])
    assert view.elsewhere == () and len(view.causes) == len(result.causes)


# -- one conversation per outage --------------------------------------------------------------------

def test_two_diagnoses_whose_first_cause_is_the_same_root_are_one_outage():
    first = triage([expired_root(), sidecar_crash_loop()]).to_list()
    second = triage([expired_root(), stale_proxy(), upstream_503s()]).causes
    assert shared_cause(second, first).startswith('Mesh root CA "CN=Istio CA"')


def test_a_lone_error_both_diagnoses_see_does_not_join_them():
    gateway = codes.finding("MB3002", origin="Secret istio-system/shop-tls", what='Gateway TLS certificate "CN=shop"',
                            left="5 days", not_after="2026-11-29T05:07:00Z")
    first = triage([gateway, istiod_oomkilled(), istiod_not_ready()]).to_list()
    second = triage([gateway, sidecar_crash_loop(), upstream_503s()]).causes
    assert shared_cause(second, first) is None


# -- causes, not symptoms: many callers, one failure; a policy behind a 403 ------------------------------------

def no_healthy_upstream(caller: str, cluster: str = CLUSTER_TO_PAYMENT):
    return codes.finding("MB4013", origin=f"Pod prod/{caller}", pod=f"prod/{caller}", count=120, unit="requests",
                         service="payment-service.prod:8080", detail="", cause="every endpoint is ejected",
                         evidence={"cluster": cluster})


def test_many_callers_failing_the_same_way_to_one_service_are_one_cause_with_its_count():
    callers = [no_healthy_upstream(f"api-service-6b7c9d8f5-{suffix}") for suffix in ("k2m4p", "z8n3q", "a1b2c")]
    result = triage(callers)
    [cause] = result.causes
    assert len(cause.explains) == 2
    assert "3 callers see the same failure calling payment-service in prod" in cause.reasons


def test_the_same_flag_to_different_services_stays_separate():
    other = "outbound|8080||orders.prod.svc.cluster.local"
    result = triage([no_healthy_upstream("api-service-6b7c9d8f5-k2m4p"),
                     no_healthy_upstream("api-service-6b7c9d8f5-z8n3q", cluster=other)])
    assert len(result.causes) == 2


def test_a_crash_looping_upstream_still_explains_every_caller_directly():
    crash = sidecar_crash_loop()
    callers = [no_healthy_upstream(f"api-service-6b7c9d8f5-{suffix}") for suffix in ("k2m4p", "z8n3q")]
    result = triage([*callers, crash])
    assert result.top.finding is crash and set(map(id, result.top.explains)) >= set(map(id, callers))


def rbac_denied(pod="payments-5c6d7e8f9-abcde", namespace="shop"):
    return codes.finding("MB4022", origin=f"Pod {namespace}/{pod}", pod=f"{namespace}/{pod}", count=310,
                         listener="inbound port 8080", allowed=0, cause="an AuthorizationPolicy denies them")


def test_an_allow_policy_with_no_rules_explains_the_403s_in_its_namespace():
    policy = codes.finding("MB7001", origin="AuthorizationPolicy shop/payments-allow", policy="shop/payments-allow",
                           workloads="payments")
    denied = rbac_denied()
    result = triage([denied, policy])
    assert result.top.finding is policy and denied in result.top.explains
    assert result.top.first_step is None or "permissive" not in (result.top.first_step.action or "")


def test_a_policy_in_another_namespace_does_not_explain_the_403s():
    policy = codes.finding("MB7001", origin="AuthorizationPolicy billing/allow-nothing", policy="billing/allow-nothing",
                           workloads="invoices")
    result = triage([rbac_denied(), policy])
    assert len(result.causes) == 2


def test_a_grouped_rejection_also_explains_the_proxies_own_rejected_update_counters():
    pods = ["Pod bookinfo/reviews-v2-5b64f5c8d6-xk2lp", "Pod bookinfo/ratings-v1-7d9f8c6b5-q2w3e"]
    grouped = codes.finding("MB2012", origin="EnvoyFilter bookinfo/custom-auth", proxies="2 proxies reject",
                            types="LDS", error="Error adding/updating listener(s) virtualInbound", source="x",
                            evidence={"proxies": pods})
    counters = [codes.finding("MB4025", origin=pod, pod=pod.split(" ")[1], count=3, what="listeners", cause="x")
                for pod in pods]
    result = triage([*counters, grouped])
    assert [c.finding for c in result.causes] == [grouped]
