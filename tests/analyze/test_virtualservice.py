"""VirtualService analyzers: the same codes, levels and messages as istioctl analyze."""

from commands.findings import Finding, Level
from tests.analyze.grid import analyze_istio_files
from tests.support.analysis import analyze_yaml, with_code

REVIEWS = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}, {name: grpc, port: 9090}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
---
"""


def vs(name: str, body: str, namespace: str = "default") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{body}
---
"""


def findings(text: str, code: str, origin: str | None = None) -> list[Finding]:
    """Findings with ``code`` about ``origin`` (about any VirtualService when not given)."""
    return [f for f in with_code(analyze_yaml(text), code)
            if f.origin == origin or (origin is None and f.origin.startswith("VirtualService "))]


def only(text: str, code: str, origin: str) -> Finding:
    found = findings(text, code, origin)
    assert len(found) == 1, found
    return found[0]


# IST0101 host ---------------------------------------------------------------------------------

def test_unknown_destination_host_is_ist0101():
    text = REVIEWS + vs("details", """
  hosts: [details]
  http:
  - route:
    - destination: {host: details}
""")
    finding = only(text, "IST0101", "VirtualService default/details")
    assert finding.level == Level.ERROR
    assert finding.message == 'Referenced host not found: "details"'


def test_short_destination_host_resolves_in_the_virtualservice_namespace():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
""")
    assert findings(text, "IST0101") == []


def test_short_destination_host_of_a_service_in_another_namespace_is_ist0101():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
""", namespace="frontend")
    finding = only(text, "IST0101", "VirtualService frontend/reviews")
    assert finding.message == 'Referenced host not found: "reviews"'


def test_fqdn_destination_host_of_a_service_in_another_namespace_is_found():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local}
""", namespace="frontend")
    assert findings(text, "IST0101") == []


def test_service_exported_only_to_its_namespace_is_not_found_from_another():
    text = """
apiVersion: v1
kind: Service
metadata:
  name: ledger
  namespace: bank
  annotations: {networking.istio.io/exportTo: "."}
spec:
  ports: [{port: 80}]
---
""" + vs("ledger", """
  hosts: [ledger.bank.svc.cluster.local]
  http:
  - route:
    - destination: {host: ledger.bank.svc.cluster.local}
""", namespace="shop")
    finding = only(text, "IST0101", "VirtualService shop/ledger")
    assert finding.message == 'Referenced host not found: "ledger.bank.svc.cluster.local"'


def test_service_entry_hosts_including_wildcards_are_known_destinations():
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: egress}
spec:
  hosts: [api.partner.io, "*.example.com"]
  ports: [{number: 443, name: tls, protocol: TLS}]
---
""" + vs("external", """
  hosts: [api.partner.io]
  tls:
  - match: [{port: 443, sniHosts: [api.partner.io]}]
    route:
    - destination: {host: api.partner.io}
    - destination: {host: www.example.com}
""")
    assert findings(text, "IST0101") == []


def test_unknown_mirror_host_is_ist0101_mirror_host():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    mirror: {host: shadow}
""")
    finding = only(text, "IST0101", "VirtualService default/reviews")
    assert finding.message == 'Referenced mirror host not found: "shadow"'


def test_destination_port_the_service_does_not_expose_is_ist0101_host_port():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, port: {number: 8080}}
""")
    finding = only(text, "IST0101", "VirtualService default/reviews")
    assert finding.message == 'Referenced host:port not found: "reviews:8080"'


def test_destination_port_the_service_exposes_is_fine():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, port: {number: 9080}}
""")
    assert findings(text, "IST0101") == []


# IST0101 subset -------------------------------------------------------------------------------

def test_subset_missing_from_destination_rule_is_ist0101():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
""")
    finding = only(text, "IST0101", "VirtualService default/reviews")
    assert finding.level == Level.ERROR
    assert finding.message == 'Referenced host+subset in destinationrule not found: "reviews+v2"'


def test_subset_defined_by_a_destination_rule_with_the_fqdn_host_is_found():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local, subset: v1}
""", namespace="frontend")
    assert findings(text, "IST0101") == []


def test_subset_of_a_service_entry_host_defined_in_another_namespace_is_found():
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: egress}
spec:
  hosts: [api.partner.io]
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: partner, namespace: egress}
spec:
  host: api.partner.io
  subsets: [{name: eu, labels: {region: eu}}]
---
""" + vs("partner", """
  hosts: [api.partner.io]
  tls:
  - match: [{port: 443, sniHosts: [api.partner.io]}]
    route:
    - destination: {host: api.partner.io, subset: eu}
""", namespace="shop")
    assert findings(text, "IST0101") == []


def test_subset_missing_on_a_mirror_is_ist0101_mirror_subset():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
    mirror: {host: reviews, subset: canary}
""")
    finding = only(text, "IST0101", "VirtualService default/reviews")
    assert finding.message == 'Referenced mirror+subset in destinationrule not found: "reviews+canary"'


# IST0101 gateway ------------------------------------------------------------------------------

GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.shop.example.com", "./admin.example.com", "payments/pay.example.com"]
---
"""


def test_missing_gateway_is_ist0101():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews.shop.example.com]
  gateways: [public]
  http:
  - route:
    - destination: {host: reviews}
""")
    finding = only(text, "IST0101", "VirtualService default/reviews")
    assert finding.level == Level.ERROR
    assert finding.message == 'Referenced gateway not found: "public"'


def test_gateway_named_namespace_slash_name_is_found():
    text = REVIEWS + GATEWAY + vs("reviews", """
  hosts: [reviews.shop.example.com]
  gateways: [istio-system/public]
  http:
  - route:
    - destination: {host: reviews}
""")
    assert findings(text, "IST0101") == []
    assert findings(text, "IST0132") == []


def test_short_gateway_name_resolves_in_the_virtualservice_namespace():
    text = REVIEWS + GATEWAY + vs("reviews", """
  hosts: [reviews.shop.example.com]
  gateways: [public]
  http:
  - route:
    - destination: {host: reviews}
""")
    assert only(text, "IST0101", "VirtualService default/reviews").message == 'Referenced gateway not found: "public"'


def test_mesh_gateway_needs_no_gateway_object():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews]
  gateways: [mesh]
  http:
  - route:
    - destination: {host: reviews}
""")
    assert findings(text, "IST0101") == []
    assert findings(text, "IST0132") == []


# IST0132 --------------------------------------------------------------------------------------

def test_host_not_served_by_the_gateway_is_ist0132():
    text = REVIEWS + GATEWAY + vs("reviews", """
  hosts: [reviews.blog.example.com]
  gateways: [istio-system/public]
  http:
  - route:
    - destination: {host: reviews}
""")
    finding = only(text, "IST0132", "VirtualService default/reviews")
    assert finding.level == Level.WARNING
    assert finding.message == ("one or more host [reviews.blog.example.com] defined in VirtualService "
                               "default/reviews not found in Gateway istio-system/public.")


def test_gateway_host_scoped_to_another_namespace_does_not_serve_the_virtualservice():
    text = REVIEWS + GATEWAY + vs("pay", """
  hosts: [pay.example.com]
  gateways: [istio-system/public]
  http:
  - route:
    - destination: {host: reviews}
""")
    assert len(findings(text, "IST0132", "VirtualService default/pay")) == 1


def test_gateway_host_scoped_to_the_virtualservice_namespace_serves_it():
    text = REVIEWS + GATEWAY + vs("pay", """
  hosts: [pay.example.com]
  gateways: [istio-system/public]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local}
""", namespace="payments")
    assert findings(text, "IST0132") == []


def test_dot_slash_gateway_host_serves_virtualservices_in_the_gateway_namespace_only():
    body = """
  hosts: [admin.example.com]
  gateways: [istio-system/public]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local}
"""
    text = REVIEWS + GATEWAY + vs("admin", body, namespace="istio-system") + vs("admin", body, namespace="default")
    assert [f.origin for f in findings(text, "IST0132")] == ["VirtualService default/admin"]


# IST0109 --------------------------------------------------------------------------------------

def test_two_mesh_virtualservices_for_the_same_host_are_ist0109():
    text = REVIEWS + vs("reviews-a", """
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
""") + vs("reviews-b", """
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews}
""")
    found = findings(text, "IST0109")
    assert sorted(f.origin for f in found) == ["VirtualService default/reviews-a", "VirtualService default/reviews-b"]
    assert found[0].level == Level.ERROR
    assert found[0].message == (
        "The VirtualServices default/reviews-a,default/reviews-b associated with mesh gateway define the same host "
        "*/reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging "
        "the conflicting VirtualServices into a single resource.")


def test_virtualservices_exported_to_their_own_namespaces_do_not_conflict():
    body = """
  hosts: [reviews.default.svc.cluster.local]
  exportTo: ["."]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local}
"""
    text = REVIEWS + vs("reviews", body, namespace="team-a") + vs("reviews", body, namespace="team-b")
    assert findings(text, "IST0109") == []


def test_virtualservice_bound_only_to_an_ingress_gateway_does_not_conflict_on_mesh():
    text = REVIEWS + GATEWAY + vs("reviews-mesh", """
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
""") + vs("reviews-edge", """
  hosts: [reviews]
  gateways: [istio-system/public]
  http:
  - route:
    - destination: {host: reviews}
""")
    assert findings(text, "IST0109") == []


# IST0112 --------------------------------------------------------------------------------------

def test_multi_port_service_without_port_selector_is_ist0112():
    text = REVIEWS + vs("ratings", """
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
""")
    finding = only(text, "IST0112", "VirtualService default/ratings")
    assert finding.level == Level.ERROR
    assert finding.message == ('This VirtualService routes to a service "ratings" that exposes multiple ports '
                               "[9080 9090]. Specifying a port in the destination is required to disambiguate.")


def test_single_port_service_needs_no_port_selector():
    text = REVIEWS + vs("reviews", """
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
""")
    assert findings(text, "IST0112") == []


def test_port_selector_disambiguates_a_multi_port_service():
    text = REVIEWS + vs("ratings", """
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings, port: {number: 9090}}
""")
    assert findings(text, "IST0112") == []
    assert findings(text, "IST0101") == []


# --- exportTo scoping (istio/istio testdata) ---------------------------------------------------


def test_host_exported_to_some_namespaces_conflicts_with_the_same_host_exported_everywhere():
    found = analyze_istio_files("virtualservice_conflictingmeshgatewayhosts_with_exportto.yaml",
                                analyzers=("virtualservice.ConflictingMeshGatewayHostsAnalyzer",))
    assert sorted(f.origin for f in found if "productpage-c" in f.origin) == [
        "VirtualService bar/productpage-c", "VirtualService foo/productpage-c"]


def test_hosts_visible_in_different_namespaces_do_not_conflict():
    # team1/ratings and team2/ratings are each exported to their own namespace only.
    found = analyze_istio_files("virtualservice_conflictingmeshgatewayhosts.yaml",
                                analyzers=("virtualservice.ConflictingMeshGatewayHostsAnalyzer",))
    assert [f.origin for f in found if f.origin == "VirtualService team1/ratings"] == []


def test_destination_not_visible_where_the_virtual_service_is_exported_is_ist0101():
    found = analyze_istio_files("virtualservice_destinationhosts.yaml",
                                analyzers=("virtualservice.DestinationHostAnalyzer",))
    assert [f.message for f in found if f.origin == "VirtualService hello/hello-export-to-bogus"] == [
        'Referenced host not found: "hello.hello.svc.cluster.local"']
    # The Service is exported to hello1, so the VirtualService there may route to it.
    assert [f for f in found if f.origin == "VirtualService hello1/hello"] == []


def test_route_without_destination_is_a_host_not_found():
    text = REVIEWS + vs("half-routed", """
  hosts: [reviews]
  http:
  - route:
    - {}
    - destination: {host: reviews}
""")
    assert [f.message for f in findings(text, "IST0101")] == ['Referenced host not found: ""']


# --- Gateway API gateways and generated internal gateways --------------------------------------

K8S_GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, hostname: example.com, port: 80, protocol: HTTP}
---
"""


def test_host_missing_from_gateway_api_listeners_is_ist0132():
    text = REVIEWS + K8S_GATEWAY + vs("web", "  hosts: [wrong.example.com]\n  gateways: [default/web]\n"
                                             "  http: [{route: [{destination: {host: reviews}}]}]")
    assert [f.code for f in findings(text, "IST0132") + findings(text, "IST0101")] == ["IST0132"]


def test_host_on_a_gateway_api_listener_is_served():
    text = REVIEWS + K8S_GATEWAY + vs("web", "  hosts: [example.com]\n  gateways: [default/web]\n"
                                             "  http: [{route: [{destination: {host: reviews}}]}]")
    assert findings(text, "IST0132") == [] and findings(text, "IST0101") == []


def test_reference_to_a_generated_internal_gateway_is_ist0165_only():
    found = analyze_istio_files("virtualservice_internal_gateway_ref.yaml",
                                analyzers=("virtualservice.GatewayAnalyzer",))
    assert [(f.code, f.level, f.message) for f in found] == [(
        "IST0165", Level.WARNING, "Gateway reference in VirtualService default/httpbin is to an "
        "implementation-generated internal Gateway: istio-ingress/gateway~istio-autogenerated-k8s-gateway~foo.")]
