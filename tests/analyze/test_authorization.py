"""AuthorizationPolicies that deny traffic (MB7001-MB7004), and the explanation a check gets for RBAC denials."""

from __future__ import annotations

from commands.authz.evaluate import Caller, Request, Verdict
from commands.authz.explain import denial_findings, explain_rbac_denials
from commands.findings import Level
from tests.support.analysis import analyze_yaml, snapshot_from_yaml, with_code

MESH = """
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: front, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: payments-1, namespace: prod, labels: {app: payments}}
spec: {serviceAccountName: payments, containers: [{name: app, image: 'pay:1'}, {name: istio-proxy, image: 'proxyv2:1.24.0'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: front, labels: {app: web}}
spec: {serviceAccountName: web, containers: [{name: app, image: 'web:1'}, {name: istio-proxy, image: 'proxyv2:1.24.0'}]}
---
"""


def policy(name: str, spec: str, *, namespace: str = "prod", annotations: str = "{}") -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {namespace}, annotations: {annotations}}}
spec:
  {spec}
---
"""


SELECT_PAYMENTS = "selector: {matchLabels: {app: payments}}"


def findings(text: str, code: str):
    return with_code(analyze_yaml(MESH + text), code)


# -- MB7001 ------------------------------------------------------------------------------------------------------

def test_allow_policy_without_rules_is_an_error_naming_policy_and_pods():
    [found] = findings(policy("payments-allow", SELECT_PAYMENTS), "MB7001")
    assert found.level is Level.ERROR
    assert found.message == ("ALLOW policy prod/payments-allow has no rules: it denies every request to pod "
                             "payments-1 in prod (403 RBAC: access denied)")
    assert found.remediation.command == "kubectl get authorizationpolicy -n prod payments-allow -o yaml"
    assert "istioctl experimental authz check payments-1 -n prod" in found.remediation.summary


def test_allow_nothing_baseline_is_quiet_where_another_allow_policy_has_rules():
    text = (policy("allow-nothing", "{}", namespace="istio-system")
            + policy("payments-allow", SELECT_PAYMENTS + "\n  rules: [{from: [{source: {namespaces: [front]}}]}]"))
    [found] = findings(text, "MB7001")
    assert found.origin == "AuthorizationPolicy istio-system/allow-nothing"
    assert "pod web-1 in front" in found.message  # payments has its own ALLOW rules; web has none


def test_dry_run_allow_policy_without_rules_is_not_an_outage():
    assert findings(policy("payments-allow", SELECT_PAYMENTS, annotations='{istio.io/dry-run: "true"}'),
                    "MB7001") == []


def test_allow_policy_with_an_empty_rule_is_quiet():
    assert findings(policy("payments-allow", SELECT_PAYMENTS + "\n  rules: [{}]"), "MB7001") == []


def test_allow_policy_selecting_no_pod_is_left_to_ist0127():
    assert findings(policy("nobody", "selector: {matchLabels: {app: gone}}"), "MB7001") == []


# -- MB7002 ------------------------------------------------------------------------------------------------------

def test_deny_policy_with_an_empty_rule_matches_every_caller():
    [found] = findings(policy("deny-all", "action: DENY\n  " + SELECT_PAYMENTS + "\n  rules: [{}]"), "MB7002")
    assert found.message == ("DENY policy prod/deny-all rule 0 matches every request: pod payments-1 in prod "
                             "answer 403 RBAC: access denied to every caller")
    assert "permissive" not in found.remediation.summary.lower()


def test_deny_policy_with_conditions_is_quiet():
    text = policy("deny-admin", "action: DENY\n  rules: [{to: [{operation: {paths: ['/admin*']}}]}]")
    assert findings(text, "MB7002") == []


def test_audit_policy_matching_everything_is_quiet():
    assert findings(policy("audit-all", "action: AUDIT\n  rules: [{}]"), "MB7002") == []


# -- MB7003 ------------------------------------------------------------------------------------------------------

def test_principal_naming_an_unused_service_account_is_reported():
    text = policy("payments-allow", SELECT_PAYMENTS + "\n  rules: [{from: [{source: {principals: "
                  "[cluster.local/ns/front/sa/frontend]}}]}]")
    [found] = findings(text, "MB7003")
    assert found.message == (
        "ALLOW policy prod/payments-allow rule 0 names principal cluster.local/ns/front/sa/frontend, which no pod, "
        "Deployment or WorkloadEntry in front runs as: the callers it means to allow are denied")


def test_principal_in_a_missing_namespace_is_reported():
    text = policy("payments-allow", "rules: [{from: [{source: {principals: [cluster.local/ns/frnt/sa/web]}}]}]")
    [found] = findings(text, "MB7003")
    assert "is in namespace frnt, and no such namespace exists" in found.message


def test_principal_of_a_foreign_trust_domain_is_reported():
    text = policy("payments-allow", "rules: [{from: [{source: {principals: [corp.example/ns/front/sa/web]}}]}]")
    [found] = findings(text, "MB7003")
    assert "belongs to trust domain corp.example, while the mesh's is cluster.local and has no alias" in found.message


def test_principal_without_spiffe_path_is_reported():
    [found] = findings(policy("p", "rules: [{from: [{source: {principals: [web]}}]}]"), "MB7003")
    assert "is not of the form <trust domain>/ns/<namespace>/sa/<service account>" in found.message


def test_existing_principals_and_wildcards_are_quiet():
    text = policy("payments-allow", "rules: [{from: [{source: {principals: "
                  "[cluster.local/ns/front/sa/web, '*/ns/front/sa/*', 'cluster.local/ns/*']}}]}]")
    assert findings(text, "MB7003") == []


def test_service_accounts_field_is_checked_in_the_policy_namespace():
    [found] = findings(policy("p", "rules: [{from: [{source: {serviceAccounts: [payments, batch]}}]}]"), "MB7003")
    assert "names serviceAccount batch, which no pod" in found.message


# -- MB7005 ------------------------------------------------------------------------------------------------------

PAYMENTS_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: payments, namespace: prod}
spec:
  selector: {app: payments}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp-ledger, port: 5432, targetPort: 5432}]
---
"""


def test_deny_on_methods_denies_every_connection_to_a_tcp_port():
    text = PAYMENTS_SERVICE + policy("deny-delete", "action: DENY\n  " + SELECT_PAYMENTS
                                     + "\n  rules: [{to: [{operation: {methods: [DELETE]}}]}]")
    [found] = findings(text, "MB7005")
    assert found.message == ("DENY policy prod/deny-delete rule 0 uses methods, which Envoy cannot read on TCP port "
                             "5432 of Service prod/payments; there the rule drops them and denies every connection its "
                             "other fields match")
    assert found.level is Level.WARNING


def test_allow_on_paths_allows_nothing_on_a_tcp_port():
    text = PAYMENTS_SERVICE + policy("allow-api", SELECT_PAYMENTS
                                     + "\n  rules: [{to: [{operation: {paths: ['/api/*']}}]}]")
    [found] = findings(text, "MB7005")
    assert "uses paths" in found.message and "allows no connection" in found.message


def test_rule_limited_to_http_ports_is_quiet():
    text = PAYMENTS_SERVICE + policy("deny-delete", "action: DENY\n  rules: [{to: [{operation: "
                                     "{methods: [DELETE], ports: ['8080']}}]}]")
    assert findings(text, "MB7005") == []


def test_principal_only_rule_is_quiet_on_tcp():
    text = PAYMENTS_SERVICE + policy("allow-web", "rules: [{from: [{source: {principals: "
                                     "[cluster.local/ns/front/sa/web]}}]}]")
    assert findings(text, "MB7005") == []


# -- explain_rbac_denials / denial_findings ---------------------------------------------------------------------

def test_explanation_names_the_deny_policy_deciding_for_a_caller():
    snapshot = snapshot_from_yaml(MESH + policy("allow-all", "rules: [{}]")
                                  + policy("deny-front", "action: DENY\n  rules: [{from: [{source: "
                                           "{namespaces: [front]}}]}]"))
    explanation = explain_rbac_denials(snapshot, "prod", {"app": "payments"}, pod="payments-1",
                                       caller=Caller("front", "web"), request=Request(method="GET"))
    assert explanation.decision.verdict is Verdict.DENIED
    assert explanation.causes[0].policy == "prod/deny-front"
    assert explanation.check_command == "istioctl experimental authz check payments-1 -n prod"


def test_explanation_is_empty_when_no_enforced_policy_can_deny():
    snapshot = snapshot_from_yaml(MESH + policy("deny-all", "action: DENY\n  rules: [{}]",
                                                annotations='{istio.io/dry-run: "true"}'))
    explanation = explain_rbac_denials(snapshot, "prod", {"app": "payments"})
    assert explanation.causes == () and [p.name for p in explanation.policies] == ["deny-all"]


def test_denial_findings_put_the_rule_less_allow_policy_first():
    snapshot = snapshot_from_yaml(MESH + policy("payments-allow", SELECT_PAYMENTS))
    pod = snapshot.get("Pod", "prod", "payments-1")
    [found] = denial_findings(snapshot, pod, denied=42)
    assert found.code == "MB7004" and found.origin == "Pod prod/payments-1"
    assert found.message == ("Envoy in prod/payments-1 denied 42 requests with 403 RBAC: access denied; ALLOW "
                             "policy prod/payments-allow has no rules, so it denies every request")
    assert found.remediation.command == "kubectl get authorizationpolicy -n prod payments-allow -o yaml"


# -- the playbook for 403 bursts --------------------------------------------------------------------------------

def test_403_alert_runs_the_analysis_that_names_the_policy():
    from bot.incidents.playbook_loader import DEFAULT_PLAYBOOKS_DIR, load_playbooks
    from bot.incidents.playbooks import suggest

    labels = {"alertname": "ServiceMeshHighErrorRate", "response_class": "403", "namespace": "prod",
              "destination_service_namespace": "prod", "destination_service_name": "payments"}
    playbook = load_playbooks(DEFAULT_PLAYBOOKS_DIR).match(labels)
    assert playbook.name == "mesh-authorization-denied"
    assert ("analyze", "destination_service_namespace") in [(s.check, s.namespace_label) for s in playbook.diagnostics]
    [found] = findings(policy("payments-allow", SELECT_PAYMENTS), "MB7001")
    [suggestion] = suggest(playbook, [found], labels)
    assert suggestion.action is None and "rules" in suggestion.title


def test_root_namespace_policy_shows_in_a_run_scoped_to_the_namespace_it_denies():
    text = MESH + policy("allow-nothing", "{}", namespace="istio-system")
    scoped = with_code(analyze_yaml(text, namespace="front"), "MB7001")
    assert [f.origin for f in scoped] == ["AuthorizationPolicy istio-system/allow-nothing"]
    assert with_code(analyze_yaml(text, namespace="elsewhere"), "MB7001") == []
