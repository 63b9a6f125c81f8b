"""Policy selectors: IST0127 for AuthorizationPolicy, IST0101 for Telemetry, as istioctl reports them."""

from commands.findings import Level
from tests.analyze.grid import analyze_istio_files
from tests.support.analysis import analyze_yaml, with_code

MESH = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-1, namespace: shop, labels: {app: cart}}
spec: {containers: [{name: cart, image: 'cart:1'}, {name: istio-proxy, image: 'proxyv2:1.22.1'}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: batch-1, namespace: legacy, labels: {app: batch}}
spec: {containers: [{name: batch, image: 'batch:1'}]}
---
"""


def policy(kind: str, name: str, namespace: str, spec: str) -> str:
    api = "telemetry.istio.io/v1" if kind == "Telemetry" else "security.istio.io/v1"
    return f"""
apiVersion: {api}
kind: {kind}
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  {spec}
---
"""


def authz(name: str, namespace: str, spec: str = "action: ALLOW") -> str:
    return policy("AuthorizationPolicy", name, namespace, spec)


def no_workloads(text: str):
    return with_code(analyze_yaml(text), "IST0127")


# IST0127 NoMatchingWorkloadsFound --------------------------------------------------------------

def test_authorization_policy_selecting_no_pod_is_ist0127():
    (finding,) = no_workloads(MESH + authz("deny-orders", "shop", "selector: {matchLabels: {app: orders, tier: db}}"))
    assert finding.level is Level.WARNING
    assert finding.origin == "AuthorizationPolicy shop/deny-orders"
    assert finding.message == "No matching workloads for this resource with the following labels: app=orders,tier=db"


def test_authorization_policy_selecting_only_pods_without_sidecar_is_ist0127():
    (finding,) = no_workloads(MESH + authz("batch", "legacy", "selector: {matchLabels: {app: batch}}"))
    assert finding.origin == "AuthorizationPolicy legacy/batch"


def test_namespace_wide_policy_in_namespace_without_mesh_pods_is_ist0127_with_empty_labels():
    (finding,) = no_workloads(MESH + authz("allow-all", "legacy"))
    assert finding.message == "No matching workloads for this resource with the following labels: "


def test_mesh_wide_policy_selecting_nothing_anywhere_is_ist0127():
    (finding,) = no_workloads(MESH + authz("global", "istio-system", "selector: {matchLabels: {app: ghost}}"))
    assert finding.origin == "AuthorizationPolicy istio-system/global"


def test_authorization_policy_selecting_an_injected_pod_is_not_ist0127():
    assert no_workloads(MESH + authz("cart", "shop", "selector: {matchLabels: {app: cart}}")) == []


def test_namespace_wide_policy_with_mesh_pods_is_not_ist0127():
    assert no_workloads(MESH + authz("allow-all", "shop")) == []


def test_mesh_wide_policy_selecting_a_pod_in_another_namespace_is_not_ist0127():
    assert no_workloads(MESH + authz("global", "istio-system", "selector: {matchLabels: {app: cart}}")) == []


def test_selectorless_mesh_wide_policy_is_not_ist0127():
    assert no_workloads(MESH + authz("deny-all", "istio-system", "{}")) == []


def test_policy_attached_by_target_ref_is_not_ist0127():
    spec = "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]"
    assert no_workloads(MESH + authz("waypoint", "legacy", spec)) == []


def test_pod_that_will_be_injected_on_restart_counts_as_workload_and_is_not_ist0127():
    pending = """
apiVersion: v1
kind: Pod
metadata: {name: orders-1, namespace: shop, labels: {app: orders}}
spec: {containers: [{name: orders, image: 'orders:1'}]}
---
"""
    assert no_workloads(MESH + pending + authz("orders", "shop", "selector: {matchLabels: {app: orders}}")) == []


def test_policy_selecting_a_workload_entry_is_not_ist0127():
    entry = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: shop}
spec: {address: 10.0.0.7, labels: {app: billing-vm}}
---
"""
    assert no_workloads(MESH + entry + authz("vm", "shop", "selector: {matchLabels: {app: billing-vm}}")) == []


def test_peer_and_request_authentication_selectors_are_not_ist0127():
    text = (MESH + policy("PeerAuthentication", "pa", "shop", "selector: {matchLabels: {app: ghost}}")
            + policy("RequestAuthentication", "ra", "shop", "selector: {matchLabels: {app: ghost}}"))
    assert no_workloads(text) == []


# Telemetry: IST0101 ReferencedResourceNotFound (selector) --------------------------------------

def test_telemetry_selector_matching_no_pod_is_ist0101():
    text = MESH + policy("Telemetry", "trace-ghost", "shop", "selector: {matchLabels: {app: ghost}}")
    (finding,) = with_code(analyze_yaml(text), "IST0101")
    assert finding.level is Level.ERROR
    assert finding.origin == "Telemetry shop/trace-ghost"
    assert finding.message == 'Referenced selector not found: "app=ghost"'


def test_telemetry_selector_matching_a_pod_is_not_ist0101():
    text = MESH + policy("Telemetry", "trace-cart", "shop", "selector: {matchLabels: {app: cart}}")
    assert with_code(analyze_yaml(text), "IST0101") == []


def test_source_namespace_pattern_matching_no_namespace_is_ist0101():
    # istio/istio testdata authorizationpolicies.yaml: "*-bogus" and "bogus-*" match none of its namespaces.
    findings = analyze_istio_files("authorizationpolicies.yaml", analyzers=("auth.AuthorizationPoliciesAnalyzer",))
    about = [f.message for f in with_code(findings, "IST0101") if f.origin == "AuthorizationPolicy httpbin/httpbin-bogus-ns"]
    assert about == ['Referenced namespace not found: "*-bogus"', 'Referenced namespace not found: "bogus-*"']


def test_source_namespaces_that_exist_or_match_a_pattern_are_fine():
    findings = analyze_istio_files("authorizationpolicies.yaml", analyzers=("auth.AuthorizationPoliciesAnalyzer",))
    assert [f for f in with_code(findings, "IST0101") if f.origin == "AuthorizationPolicy httpbin/httpbin-namespace-wide"] == []


def test_source_namespaces_are_not_judged_when_the_input_has_no_namespace_objects():
    text = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: shop}
spec:
  rules: [{from: [{source: {namespaces: [frontend]}}]}]
"""
    assert with_code(analyze_yaml(text), "IST0101") == []
