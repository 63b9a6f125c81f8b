"""commands.authz: selection and decisions as istiod builds them into Envoy's RBAC filters."""

from __future__ import annotations

import pytest

from commands.authz.evaluate import (
    Caller,
    Request,
    TrustDomains,
    Verdict,
    Workload,
    decide,
    migrated_principals,
    selecting_policies,
)
from commands.authz.policy import Action, parse_policy, policies_in
from tests.support.analysis import snapshot_from_yaml

PAYMENTS = Workload("prod", {"app": "payments", "version": "v1"}, "payments-1")
WEB = Caller(namespace="front", service_account="web")
TRUST = TrustDomains()
ANY_REQUEST = Request()


def policies(text: str):
    return policies_in(snapshot_from_yaml(text))


def policy_yaml(name: str, spec: str, *, namespace: str = "prod", annotations: str = "{}") -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {namespace}, annotations: {annotations}}}
spec:
  {spec}
---
"""


def verdict(text: str, caller: Caller = WEB, request: Request = ANY_REQUEST, trust: TrustDomains = TRUST):
    applying = selecting_policies(policies(text), PAYMENTS, "istio-system")
    return decide(applying, caller, request, trust)


# -- selection ---------------------------------------------------------------------------------------------------

def test_root_namespace_policy_applies_to_workloads_in_every_namespace():
    found = selecting_policies(policies(policy_yaml("mesh-wide", "action: DENY", namespace="istio-system")),
                               PAYMENTS, "istio-system")
    assert [p.qualified_name for p in found] == ["istio-system/mesh-wide"]


def test_policy_in_another_namespace_does_not_apply():
    assert selecting_policies(policies(policy_yaml("other", "{}", namespace="shop")), PAYMENTS, "istio-system") == []


def test_selector_must_match_every_label():
    text = (policy_yaml("v1", "selector: {matchLabels: {app: payments, version: v1}}")
            + policy_yaml("v2", "selector: {matchLabels: {app: payments, version: v2}}"))
    assert [p.name for p in selecting_policies(policies(text), PAYMENTS, "istio-system")] == ["v1"]


def test_target_ref_policy_never_applies_to_a_sidecar():
    text = policy_yaml("gw", "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: payments}]")
    assert selecting_policies(policies(text), PAYMENTS, "istio-system") == []


def test_target_ref_policy_applies_to_the_gateway_api_gateway_it_names():
    gateway = Workload("prod", {"gateway.networking.k8s.io/gateway-name": "edge"}, "edge-istio-1")
    text = (policy_yaml("edge", "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: edge}]")
            + policy_yaml("other", "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: x}]"))
    assert [p.name for p in selecting_policies(policies(text), gateway, "istio-system")] == ["edge"]


def test_waypoint_ignores_selector_policies():
    waypoint = Workload("prod", {"gateway.networking.k8s.io/gateway-name": "waypoint",
                                 "gateway.istio.io/managed": "istio.io-mesh-controller"})
    assert selecting_policies(policies(policy_yaml("ns-wide", "action: DENY")), waypoint, "istio-system") == []


# -- parsing -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, dry_run", [("true", True), ("True", True), ("1", True), ("false", False),
                                            ("yes", False)])
def test_dry_run_annotation_reads_like_go_parse_bool(value, dry_run):
    [policy] = policies(policy_yaml("p", "{}", annotations=f'{{istio.io/dry-run: "{value}"}}'))
    assert policy.dry_run is dry_run


def test_omitted_action_is_allow():
    [policy] = policies(policy_yaml("p", "rules: [{}]"))
    assert policy.action is Action.ALLOW and policy.rules[0].matches_everything


# -- decisions ---------------------------------------------------------------------------------------------------

def test_no_policy_allows_everything():
    assert verdict("").verdict is Verdict.ALLOWED


def test_allow_policy_without_rules_denies_every_caller():
    decision = verdict(policy_yaml("payments-allow", "selector: {matchLabels: {app: payments}}"))
    assert decision.verdict is Verdict.DENIED
    assert [p.name for p in decision.allow_policies] == ["payments-allow"]
    assert "has no rules" in decision.reason


def test_allow_policy_with_an_empty_rule_allows_every_caller():
    assert verdict(policy_yaml("allow-all", "rules: [{}]")).verdict is Verdict.ALLOWED


def test_allow_policy_allows_the_principal_it_names_and_denies_others():
    text = policy_yaml("allow-web", "rules: [{from: [{source: {principals: [cluster.local/ns/front/sa/web]}}]}]")
    assert verdict(text).verdict is Verdict.ALLOWED
    assert verdict(text, Caller("front", "admin")).verdict is Verdict.DENIED


def test_deny_wins_over_allow():
    text = (policy_yaml("allow-all", "rules: [{}]")
            + policy_yaml("deny-front", "action: DENY\n  rules: [{from: [{source: {namespaces: [front]}}]}]"))
    decision = verdict(text)
    assert decision.verdict is Verdict.DENIED
    assert (decision.policy.name, decision.rule) == ("deny-front", 0)


def test_dry_run_deny_decides_nothing_but_is_reported():
    text = policy_yaml("deny-all", "action: DENY\n  rules: [{}]", annotations='{istio.io/dry-run: "true"}')
    decision = verdict(text)
    assert decision.verdict is Verdict.ALLOWED
    assert [p.name for p in decision.dry_run] == ["deny-all"]


def test_audit_policy_never_denies():
    assert verdict(policy_yaml("audit", "action: AUDIT\n  rules: [{}]")).verdict is Verdict.ALLOWED


def test_namespaces_need_an_mtls_identity():
    text = policy_yaml("allow-front", "rules: [{from: [{source: {namespaces: [front]}}]}]")
    assert verdict(text).verdict is Verdict.ALLOWED
    assert verdict(text, Caller("front", "web", mtls=False)).verdict is Verdict.DENIED


def test_namespace_patterns_match_as_istio_regex():
    text = policy_yaml("allow-fr", "rules: [{from: [{source: {namespaces: ['fr*']}}]}]")
    assert verdict(text).verdict is Verdict.ALLOWED
    assert verdict(text, Caller("back", "web")).verdict is Verdict.DENIED


def test_not_principals_excludes_the_named_caller():
    text = policy_yaml("allow-but-web", "rules: [{from: [{source: {notPrincipals: [cluster.local/ns/front/sa/web]}}]}]")
    assert verdict(text).verdict is Verdict.DENIED
    assert verdict(text, Caller("front", "api")).verdict is Verdict.ALLOWED


def test_service_accounts_field_defaults_to_the_policy_namespace():
    text = policy_yaml("allow-sa", "rules: [{from: [{source: {serviceAccounts: [web, front/api]}}]}]")
    assert verdict(text, Caller("prod", "web")).verdict is Verdict.ALLOWED
    assert verdict(text, Caller("front", "api")).verdict is Verdict.ALLOWED
    assert verdict(text, Caller("front", "web")).verdict is Verdict.DENIED


def test_unknown_method_leaves_an_allow_on_methods_undetermined():
    text = policy_yaml("allow-get", "rules: [{to: [{operation: {methods: [GET]}}]}]")
    assert verdict(text).verdict is Verdict.UNDETERMINED
    assert verdict(text, request=Request(method="GET")).verdict is Verdict.ALLOWED
    assert verdict(text, request=Request(method="POST")).verdict is Verdict.DENIED


def test_paths_match_prefix_and_suffix_wildcards():
    text = policy_yaml("allow-api", "rules: [{to: [{operation: {paths: ['/api/*', '*.css']}}]}]")
    assert verdict(text, request=Request(path="/api/v1/pay")).verdict is Verdict.ALLOWED
    assert verdict(text, request=Request(path="/site.css")).verdict is Verdict.ALLOWED
    assert verdict(text, request=Request(path="/admin")).verdict is Verdict.DENIED


def test_on_tcp_an_allow_rule_with_http_fields_is_skipped():
    # model.go checkError: on a TCP filter chain the ALLOW rule is dropped, so nothing is allowed.
    text = policy_yaml("allow-get", "rules: [{to: [{operation: {methods: [GET], ports: ['5432']}}]}]")
    assert verdict(text, request=Request(port=5432, http=False)).verdict is Verdict.DENIED


def test_on_tcp_a_deny_rule_drops_its_http_fields_and_denies_more():
    text = policy_yaml("deny-post", "action: DENY\n  rules: [{to: [{operation: {methods: [POST]}}]}]")
    assert verdict(text, request=Request(port=5432, http=False)).verdict is Verdict.DENIED
    assert verdict(text, request=Request(method="GET")).verdict is Verdict.ALLOWED


def test_ports_and_when_conditions_combine():
    text = policy_yaml("allow-8080", "rules: [{to: [{operation: {ports: ['8080']}}], "
                       "when: [{key: source.namespace, values: [front]}]}]")
    assert verdict(text, request=Request(port=8080)).verdict is Verdict.ALLOWED
    assert verdict(text, request=Request(port=9090)).verdict is Verdict.DENIED
    assert verdict(text, Caller("back", "web"), Request(port=8080)).verdict is Verdict.DENIED


def test_header_condition_is_undetermined_rather_than_guessed():
    text = policy_yaml("allow-hdr", "rules: [{when: [{key: 'request.headers[x-team]', values: [pay]}]}]")
    assert verdict(text).verdict is Verdict.UNDETERMINED


def test_ip_blocks_match_cidrs():
    text = policy_yaml("deny-net", "action: DENY\n  rules: [{from: [{source: {ipBlocks: [10.1.0.0/16]}}]}]")
    assert verdict(text, Caller("front", "web", ip="10.1.2.3")).verdict is Verdict.DENIED
    assert verdict(text, Caller("front", "web", ip="10.2.0.1")).verdict is Verdict.ALLOWED


def test_custom_policy_leaves_the_decision_to_its_external_authorizer():
    text = policy_yaml("ext", "action: CUSTOM\n  provider: {name: opa}\n  rules: [{to: [{operation: {paths: ['/*']}}]}]")
    decision = verdict(text, request=Request(path="/pay"))
    assert [p.name for p in decision.custom] == ["ext"] and decision.verdict is Verdict.UNDETERMINED
    assert "external authorizer (opa)" in decision.reason


def test_custom_policy_whose_rules_do_not_match_leaves_rbac_to_decide():
    text = policy_yaml("ext", "action: CUSTOM\n  provider: {name: opa}\n  rules: [{to: [{operation: {paths: ['/admin']}}]}]")
    assert verdict(text, request=Request(path="/pay")).verdict is Verdict.ALLOWED


# -- trust domains (pilot/pkg/security/trustdomain/bundle.go) ----------------------------------------------------

def test_cluster_local_principal_matches_the_mesh_trust_domain():
    text = policy_yaml("allow-web", "rules: [{from: [{source: {principals: [cluster.local/ns/front/sa/web]}}]}]")
    assert verdict(text, trust=TrustDomains("corp.example")).verdict is Verdict.ALLOWED


def test_principal_of_an_alias_matches_after_migration():
    text = policy_yaml("allow-old", "rules: [{from: [{source: {principals: [old-td/ns/front/sa/web]}}]}]")
    trust = TrustDomains("new-td", ("old-td",))
    assert verdict(text, trust=trust).verdict is Verdict.ALLOWED
    assert verdict(text, trust=TrustDomains("new-td")).verdict is Verdict.DENIED


def test_migrated_principals_follow_istio_testdata():
    # istio/istio pilot/pkg/security/authz/builder/testdata/http/td-aliases-source-principal-{in,out}.yaml with
    # the bundle new-td + [old-td, some-trustdomain] (builder_test.go): *-td is kept, the third domain is added.
    trust = TrustDomains("new-td", ("old-td", "some-trustdomain"))
    assert migrated_principals("*-td/ns/foo/sa/prefix-td", trust) == [
        "*-td/ns/foo/sa/prefix-td", "some-trustdomain/ns/foo/sa/prefix-td"]
    assert migrated_principals("*/ns/foo/sa/all-td", trust) == ["*/ns/foo/sa/all-td"]
    # simple-policy-td-aliases: td1 + [cluster.local] turns cluster.local/... into both.
    assert migrated_principals("cluster.local/ns/rule[0]/sa/a", TrustDomains("td1", ("cluster.local",))) == [
        "td1/ns/rule[0]/sa/a", "cluster.local/ns/rule[0]/sa/a"]


def test_trust_domains_of_mesh_config():
    assert TrustDomains.of({"trustDomain": "corp", "trustDomainAliases": ["old"]}).all == ("corp", "old")
    assert TrustDomains.of({}).all == ("cluster.local",)


def test_parse_policy_keeps_target_refs_and_provider():
    [resource] = snapshot_from_yaml(policy_yaml(
        "p", "action: CUSTOM\n  provider: {name: opa}\n  targetRef: {kind: Gateway, name: edge}")).of_kind(
        "AuthorizationPolicy")
    policy = parse_policy(resource)
    assert (policy.action, policy.provider, len(policy.target_refs)) == (Action.CUSTOM, "opa", 1)


def test_header_condition_is_decided_when_the_headers_are_known():
    text = policy_yaml("allow-hdr", "rules: [{when: [{key: 'request.headers[x-team]', values: [pay]}]}]")
    assert verdict(text, request=Request(headers={"X-Team": "pay"})).verdict is Verdict.ALLOWED
    assert verdict(text, request=Request(headers={})).verdict is Verdict.DENIED


def test_request_principal_is_decided_once_the_caller_says_it_has_no_jwt():
    text = policy_yaml("allow-jwt", "rules: [{from: [{source: {requestPrincipals: ['*']}}]}]")
    assert verdict(text).verdict is Verdict.UNDETERMINED
    assert verdict(text, Caller("front", "web", request_principal="")).verdict is Verdict.DENIED
    assert verdict(text, Caller("front", "web", request_principal="https://idp/alice")).verdict is Verdict.ALLOWED
