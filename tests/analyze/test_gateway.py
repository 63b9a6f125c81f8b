"""Gateway analyzers: the same codes, levels and messages as istioctl analyze."""

import base64
from datetime import datetime, timedelta, timezone

from commands.findings import Finding, Level
from tests.analyze.grid import analyze_istio_files
from tests.support.analysis import analyze_yaml, with_code
from tests.support.certs import mint

INGRESS = """
apiVersion: v1
kind: Pod
metadata:
  name: istio-ingressgateway-abc
  namespace: istio-system
  labels: {app: istio-ingressgateway, istio: ingressgateway}
spec:
  containers:
  - name: istio-proxy
    image: proxyv2
    ports: [{name: http2, containerPort: 8080}, {name: https, containerPort: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports:
  - {name: http2, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: https}
---
"""


def gateway(name: str, body: str, namespace: str = "default") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{body}
---
"""


def tls_secret(name: str, cert_pem: str, namespace: str = "istio-system") -> str:
    encoded = base64.b64encode(cert_pem.encode()).decode()
    key = base64.b64encode(b"not a real key").decode()
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: kubernetes.io/tls
data: {{tls.crt: {encoded}, tls.key: {key}}}
---
"""


def https_gateway(name: str = "shop", credential: str = "shop-cert") -> str:
    return gateway(name, f"""
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: SIMPLE, credentialName: {credential}}}
""")


def findings(text: str, code: str, origin: str | None = None) -> list[Finding]:
    """Findings with ``code`` about ``origin`` (about any Gateway when not given)."""
    return [f for f in with_code(analyze_yaml(text), code)
            if f.origin == origin or (origin is None and f.origin.startswith("Gateway "))]


def only(text: str, code: str, origin: str) -> Finding:
    found = findings(text, code, origin)
    assert len(found) == 1, found
    return found[0]


# IST0101 selector -----------------------------------------------------------------------------

def test_selector_matching_no_pods_is_ist0101():
    text = INGRESS + gateway("private", """
  selector: {istio: private-ingressgateway, app: edge}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
""")
    finding = only(text, "IST0101", "Gateway default/private")
    assert finding.level == Level.ERROR
    assert finding.message == 'Referenced selector not found: "app=edge,istio=private-ingressgateway"'


def test_selector_matching_gateway_pods_in_another_namespace_is_fine():
    text = INGRESS + gateway("public", """
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
""")
    assert findings(text, "IST0101") == []


# IST0101 credentialName -----------------------------------------------------------------------

def test_credential_secret_missing_from_the_gateway_workload_namespace_is_ist0101():
    cert = mint("shop.example.com", dns_names=("shop.example.com",))
    # The Secret sits next to the Gateway object, but Istio reads it where the gateway pods run.
    text = INGRESS + https_gateway() + tls_secret("shop-cert", cert.cert_pem, namespace="default")
    finding = only(text, "IST0101", "Gateway default/shop")
    assert finding.level == Level.ERROR
    assert finding.message == 'Referenced credentialName not found: "shop-cert"'


def test_credential_secret_in_the_gateway_workload_namespace_is_fine():
    cert = mint("shop.example.com", dns_names=("shop.example.com",))
    text = INGRESS + https_gateway() + tls_secret("shop-cert", cert.cert_pem)
    assert findings(text, "IST0101") == []
    assert findings(text, "IST0161") == []


def test_passthrough_server_ignores_credential_name():
    text = INGRESS + gateway("shop", """
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [shop.example.com]
    tls: {mode: PASSTHROUGH, credentialName: unused}
""")
    assert findings(text, "IST0101") == []


# IST0161 --------------------------------------------------------------------------------------

def test_expired_gateway_certificate_is_ist0161():
    now = datetime.now(timezone.utc)
    cert = mint("shop.example.com", not_before=now - timedelta(days=90), not_after=now - timedelta(days=1))
    text = INGRESS + https_gateway() + tls_secret("shop-cert", cert.cert_pem)
    finding = only(text, "IST0161", "Gateway default/shop")
    assert finding.level == Level.ERROR
    assert finding.message == ("The credential referenced by the Gateway shop in namespace istio-system is invalid, "
                               "which can cause the traffic not to work as expected.")


def test_secret_without_a_certificate_is_ist0161():
    text = INGRESS + https_gateway() + tls_secret("shop-cert", "this is not PEM")
    assert len(findings(text, "IST0161", "Gateway default/shop")) == 1


def test_valid_gateway_certificate_is_not_ist0161():
    cert = mint("shop.example.com", days=30)
    text = INGRESS + https_gateway() + tls_secret("shop-cert", cert.cert_pem)
    assert findings(text, "IST0161") == []


# IST0145 --------------------------------------------------------------------------------------

def http_gateway(name: str, host: str, port: int = 80, selector: str = "{istio: ingressgateway}") -> str:
    return gateway(name, f"""
  selector: {selector}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ["{host}"]
""")


def test_two_gateways_serving_the_same_host_on_the_same_workload_and_port_are_ist0145():
    text = INGRESS + http_gateway("alpha", "foo.example.com") + http_gateway("beta", "foo.example.com")
    finding = only(text, "IST0145", "Gateway default/alpha")
    assert finding.level == Level.ERROR
    assert finding.message == ("Conflict with gateways default/beta (workload selector istio=ingressgateway, "
                               "port 80, hosts foo.example.com).")
    assert len(findings(text, "IST0145", "Gateway default/beta")) == 1


def test_gateway_with_a_narrower_selector_on_the_same_pods_conflicts():
    text = (INGRESS + http_gateway("alpha", "foo.example.com")
            + http_gateway("beta", "foo.example.com", selector="{istio: ingressgateway, app: istio-ingressgateway}"))
    assert len(findings(text, "IST0145", "Gateway default/alpha")) == 1


def test_same_host_on_different_ports_does_not_conflict():
    text = INGRESS + http_gateway("alpha", "foo.example.com") + http_gateway("beta", "foo.example.com", port=8080)
    assert findings(text, "IST0145") == []


def test_wildcard_and_specific_host_do_not_conflict():
    text = INGRESS + http_gateway("alpha", "foo.example.com") + http_gateway("beta", "*.example.com")
    assert findings(text, "IST0145") == []


def test_same_host_on_different_gateway_workloads_does_not_conflict():
    text = (INGRESS + http_gateway("alpha", "foo.example.com")
            + http_gateway("beta", "foo.example.com", selector="{istio: egressgateway}"))
    assert findings(text, "IST0145") == []


# IST0162 --------------------------------------------------------------------------------------

def test_gateway_port_not_on_the_workload_service_is_ist0162():
    text = INGRESS + http_gateway("admin", "admin.example.com", port=9000)
    finding = only(text, "IST0162", "Gateway default/admin")
    assert finding.level == Level.WARNING
    assert finding.message == ("The gateway is listening on a target port (port 9000) that is not defined in the "
                               "Service associated with its workload instances (Pod selector istio=ingressgateway). "
                               "If you need to access the gateway port through the gateway Service, it will not be "
                               "available.")


def test_gateway_port_equal_to_service_port_or_target_port_is_fine():
    text = (INGRESS + http_gateway("by-port", "a.example.com", port=80)
            + http_gateway("by-target", "b.example.com", port=8080))
    assert findings(text, "IST0162") == []


def test_named_target_port_resolves_through_the_pod_container_ports():
    text = INGRESS + http_gateway("tls", "c.example.com", port=8443)
    assert findings(text, "IST0162") == []


# --- duplicate certificates (IST0138) ----------------------------------------------------------


def test_gateways_on_one_workload_sharing_a_credential_get_ist0138():
    # istio/istio testdata gateway-duplicate-certificate.yaml
    found = analyze_istio_files("gateway-duplicate-certificate.yaml", analyzers=("gateway.CertificateAnalyzer",))
    first = [f for f in found if f.origin == "Gateway istio-system/gateway-01-test-01"]
    assert [f.message for f in first] == [
        "Duplicate certificate in multiple gateways [istio-system/gateway-01-test-01 istio-system/gateway-02-test-01] "
        "may cause 404s if clients re-use HTTP2 connections."]
    assert first[0].level is Level.WARNING


def test_gateways_with_different_credentials_are_not_ist0138():
    text = https_gateway("shop", "shop-cert") + https_gateway("blog", "blog-cert")
    assert findings(text, "IST0138") == []


def test_gateway_on_another_workload_sharing_a_credential_is_not_ist0138():
    other = gateway("internal", """
  selector: {istio: internal-gateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.internal]
    tls: {mode: SIMPLE, credentialName: shop-cert}
""")
    assert findings(https_gateway() + other, "IST0138") == []


def test_gateway_api_gateway_is_not_judged_as_an_istio_gateway():
    text = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""
    assert findings(text, "IST0101") == [] and findings(text, "IST0162") == []
