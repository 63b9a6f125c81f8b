"""Analyzers from Istio's grid that catch outages: injection webhooks (IST0139, IST0146/7), JWT claim routes
(IST0149), ExternalName ports (IST0150)."""

from __future__ import annotations

from commands.findings import Level
from tests.support.analysis import analyze_yaml, with_code

INJECTOR = """
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: {name}, labels: {labels}}}
webhooks:
- name: {hook}
  clientConfig: {{service: {{name: {service}, namespace: istio-system}}}}
  namespaceSelector: {selector}
---
"""
ISTIOD = """
apiVersion: v1
kind: Service
metadata: {name: istiod, namespace: istio-system}
spec: {ports: [{name: grpc-xds, port: 15010}]}
---
"""


def injector(name: str, *, hook: str = "rev.namespace.sidecar-injector.istio.io", service: str = "istiod",
             selector: str = "{matchLabels: {istio-injection: enabled}}", labels: str = "{}") -> str:
    return INJECTOR.format(name=name, hook=hook, service=service, selector=selector, labels=labels)


# -- IST0139 -----------------------------------------------------------------------------------------------------

def test_two_injectors_for_the_same_namespaces_overlap():
    found = with_code(analyze_yaml(ISTIOD + injector("istio-sidecar-injector") + injector("istio-sidecar-injector-2")),
                      "IST0139")
    assert sorted(f.origin for f in found) == ["MutatingWebhookConfiguration istio-sidecar-injector",
                                               "MutatingWebhookConfiguration istio-sidecar-injector-2"]
    assert found[0].level is Level.ERROR and "may cause injection to occur twice" in found[0].message


def test_revisions_selecting_different_namespaces_do_not_overlap():
    text = ISTIOD + injector("istio-sidecar-injector-canary", labels="{istio.io/rev: canary}",
                             selector="{matchLabels: {istio.io/rev: canary}}") \
        + injector("istio-sidecar-injector-stable", labels="{istio.io/rev: stable}",
                   selector="{matchLabels: {istio.io/rev: stable}}")
    assert with_code(analyze_yaml(text), "IST0139") == []


def test_injector_calling_a_missing_service_is_reported():
    [found] = with_code(analyze_yaml(ISTIOD + injector("istio-sidecar-injector", service="istiod-gone")), "IST0139")
    assert found.message == ("Injector refers to a control plane service that does not exist: "
                             "istio-system/istiod-gone.")


def test_non_istio_webhooks_are_ignored():
    text = injector("cert-manager-webhook", hook="webhook.cert-manager.io", service="missing", selector="{}")
    assert with_code(analyze_yaml(text), "IST0139") == []


# -- IST0146 / IST0147 -------------------------------------------------------------------------------------------

GATEWAY_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ingress, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{istio: ingress}}}}
  template:
    metadata: {{labels: {{istio: ingress}}}}
    spec: {{containers: [{{name: istio-proxy, image: auto}}]}}
---
"""
NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: gw, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
"""


def test_image_auto_deployment_outside_every_injector_selector_is_a_warning():
    text = NAMESPACES + ISTIOD + injector("istio-sidecar-injector") + GATEWAY_DEPLOYMENT.format(namespace="plain")
    [found] = with_code(analyze_yaml(text), "IST0146")
    assert found.origin == "Deployment plain/ingress" and found.level is Level.WARNING


def test_image_auto_deployment_in_an_injected_namespace_is_quiet():
    text = NAMESPACES + ISTIOD + injector("istio-sidecar-injector") + GATEWAY_DEPLOYMENT.format(namespace="gw")
    assert with_code(analyze_yaml(text), "IST0146") == []


def test_pod_still_holding_image_auto_was_never_injected():
    text = """
        apiVersion: v1
        kind: Pod
        metadata: {name: ingress-7d9f, namespace: gw}
        spec: {containers: [{name: istio-proxy, image: auto}]}
        """
    [found] = with_code(analyze_yaml(text), "IST0147")
    assert found.message == ("Pod ingress-7d9f contains `image: auto` but does not match any Istio injection "
                             "webhook selectors.")


# -- IST0149 -----------------------------------------------------------------------------------------------------

CLAIM_ROUTE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: istio-system}
spec:
  hosts: [api.example.com]
  gateways: [edge]
  http:
  - match: [{headers: {'@request.auth.claims.group': {exact: admin}}}]
    route: [{destination: {host: admin.prod.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [api.example.com]}]
---
apiVersion: v1
kind: Pod
metadata: {name: ingress-1, namespace: istio-system, labels: {istio: ingressgateway}}
spec: {containers: [{name: istio-proxy, image: proxyv2}]}
---
"""


def test_claim_route_at_a_gateway_without_request_authentication_is_an_error():
    [found] = with_code(analyze_yaml(CLAIM_ROUTE), "IST0149")
    assert found.level is Level.ERROR
    assert "(key: @request.auth.claims.group)" in found.message
    assert "gateway (istio-system/edge) pod (ingress-1)" in found.message


def test_claim_route_is_quiet_once_the_gateway_validates_jwts():
    text = CLAIM_ROUTE + """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules: [{issuer: https://issuer.example.com}]
"""
    assert with_code(analyze_yaml(text), "IST0149") == []


# -- IST0150 -----------------------------------------------------------------------------------------------------

def test_external_name_service_with_a_tcp_or_unnamed_port_is_reported_once_per_port():
    text = """
        apiVersion: v1
        kind: Service
        metadata: {name: payments-api, namespace: prod}
        spec:
          type: ExternalName
          externalName: api.payments.example.com
          ports: [{name: tcp, port: 443}, {port: 8443}, {name: https-alt, port: 9443}]
        """
    found = with_code(analyze_yaml(text), "IST0150")
    assert [f.evidence["port"]["port"] for f in found] == [443, 8443]
    assert with_code(analyze_yaml(text), "IST0118") == []


# -- IST0163 / IST0164 -------------------------------------------------------------------------------------------

def remote_injector(url: str) -> str:
    return f"""
        apiVersion: admissionregistration.k8s.io/v1
        kind: MutatingWebhookConfiguration
        metadata: {{name: istio-sidecar-injector-external-istiod}}
        webhooks:
        - name: namespace.sidecar-injector.istio.io
          clientConfig: {{url: {url}}}
          failurePolicy: Fail
        """


def test_blank_injector_url_of_an_external_control_plane_is_reported():
    [found] = with_code(analyze_yaml(remote_injector("null")), "IST0163")
    assert found.message == (
        "The hostname () that was provided for the webhook (namespace.sidecar-injector.istio.io) to reach the "
        "ingress gateway on the external control plane cluster is blank. Traffic may not flow properly.")


def test_unparsable_port_in_the_injector_url_is_reported():
    [found] = with_code(analyze_yaml(remote_injector("'https://istiod.example.com:15o17/inject'")), "IST0163")
    assert "was provided in an invalid format" in found.message


def test_ip_address_in_the_injector_url_is_only_information():
    findings = analyze_yaml(remote_injector("'https://10.0.0.7:15017/inject'"))
    assert [f.level for f in with_code(findings, "IST0164")] == [Level.INFO]
    assert with_code(findings, "IST0163") == []
