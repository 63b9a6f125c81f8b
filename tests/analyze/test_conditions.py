"""IST0171 negative status conditions and IST0166 selectors on Gateway API gateways, as istioctl reports them."""

from __future__ import annotations

from tests.analyze.grid import analyze_istio_files
from tests.support.analysis import analyze_yaml, with_code


def ist0171(text: str):
    return with_code(analyze_yaml(text), "IST0171")


def test_ztunnel_rejecting_a_policy_is_reported_with_its_reason():
    [found] = ist0171("""
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: ext, namespace: prod}
        spec: {action: CUSTOM, provider: {name: opa}}
        status:
          conditions:
          - {type: ZtunnelAccepted, status: "False", reason: UnsupportedValue,
             message: ztunnel does not support the CUSTOM action}
        """)
    assert found.origin == "AuthorizationPolicy prod/ext"
    assert found.message == ("A condition with a negative status is present: type=ZtunnelAccepted, "
                             "reason=UnsupportedValue, message=ztunnel does not support the CUSTOM action.")


def test_positive_and_foreign_conditions_are_quiet():
    assert ist0171("""
        apiVersion: v1
        kind: Service
        metadata: {name: pay, namespace: prod}
        status:
          conditions:
          - {type: istio.io/WaypointBound, status: "True", reason: Bound}
          - {type: argocd.argoproj.io/Synced, status: "False", reason: OutOfSync}
        """) == []


def test_istio_gateway_conditions_are_not_gateway_api_conditions():
    # conditions.go reads gvk.KubernetesGateway only; an Istio Gateway of the same kind name is not checked.
    assert ist0171("""
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: edge, namespace: prod}
        spec: {selector: {istio: ingressgateway}}
        status:
          conditions:
          - {type: Programmed, status: "False", reason: Invalid}
        """) == []


def test_route_conditions_are_read_per_parent():
    found = ist0171("""
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: pay, namespace: prod}
        spec: {parentRefs: [{name: edge}, {name: internal}]}
        status:
          parents:
          - parentRef: {name: edge}
            conditions: [{type: Accepted, status: "True", reason: Accepted}]
          - parentRef: {name: internal}
            conditions: [{type: ResolvedRefs, status: "False", reason: BackendNotFound, message: no svc}]
        """)
    assert [(f.origin, f.evidence["condition"]["reason"]) for f in found] == [
        ("HTTPRoute prod/pay", "BackendNotFound")]


def test_istio_condition_testdata_reports_each_negative_condition_once():
    findings = analyze_istio_files("condition-analyzer.yaml", analyzers=("conditions.ConditionAnalyzer",))
    assert sorted(f.origin for f in findings) == sorted([
        "Service default/negative-condition-svc", "ServiceEntry default/negative-condition-svcEntry",
        "AuthorizationPolicy default/negative-condition-authz", "Gateway default/negative-condition-gateway",
        "HTTPRoute default/negative-condition-httproute", "GRPCRoute default/negative-condition-grpcroute",
        "AuthorizationPolicy default/negative-condition-authz-partially-invalid"])


def test_selector_policy_on_a_gateway_api_pod_is_ineffective_but_target_ref_is_not():
    findings = analyze_istio_files("k8sgateway-selector.yaml", analyzers=("k8sgateway.SelectorAnalyzer",))
    assert sorted(f.origin for f in findings) == [
        "AuthorizationPolicy default/ap-ineffective", "RequestAuthentication default/ra-ineffective",
        "Telemetry default/telemetry-ineffective", "WasmPlugin default/wasmplugin-ineffective"]
    assert findings[0].message == ("Ineffective selector on Kubernetes Gateway bookinfo-gateway. Use the TargetRef "
                                   "field instead.")
