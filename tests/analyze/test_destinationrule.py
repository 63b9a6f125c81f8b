"""DestinationRule analyzers: the same codes, levels and messages as istioctl analyze."""

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
kind: Pod
metadata: {name: reviews-v1-abc, namespace: default, labels: {app: reviews, version: v1}}
spec:
  containers: [{name: reviews, image: reviews:1}]
---
"""


def dr(name: str, body: str, namespace: str = "default") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{body}
---
"""


def findings(text: str, code: str, origin: str | None = None) -> list[Finding]:
    """Findings with ``code`` about ``origin`` (about any DestinationRule when not given)."""
    return [f for f in with_code(analyze_yaml(text), code)
            if f.origin == origin or (origin is None and f.origin.startswith("DestinationRule "))]


def only(text: str, code: str, origin: str) -> Finding:
    found = findings(text, code, origin)
    assert len(found) == 1, found
    return found[0]


# IST0128 / IST0129 ----------------------------------------------------------------------------

def test_simple_tls_without_ca_certificates_is_ist0128():
    text = dr("db-tls", """
  host: mydbserver.prod.svc.cluster.local
  trafficPolicy:
    tls: {mode: SIMPLE, sni: db.example.com}
""")
    finding = only(text, "IST0128", "DestinationRule default/db-tls")
    assert finding.level == Level.WARNING
    assert finding.message == ("DestinationRule default/db-tls in namespace default has TLS mode set to SIMPLE but no "
                               "caCertificates are set to validate server identity for host: "
                               "mydbserver.prod.svc.cluster.local")


def test_tls_with_ca_certificates_is_not_ist0128():
    text = dr("db-tls", """
  host: mydbserver.prod.svc.cluster.local
  trafficPolicy:
    tls: {mode: MUTUAL, caCertificates: /etc/certs/ca.pem, clientCertificate: /etc/certs/c.pem,
          privateKey: /etc/certs/k.pem}
""")
    assert findings(text, "IST0128") == []


def test_istio_mutual_needs_no_ca_certificates():
    text = dr("reviews", """
  host: reviews
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
""")
    assert findings(text, "IST0128") == []


def test_credential_name_on_a_gateway_rule_supplies_the_ca():
    text = dr("egress-tls", """
  host: api.example.com
  workloadSelector: {matchLabels: {istio: egressgateway}}
  trafficPolicy:
    tls: {mode: SIMPLE, credentialName: api-ca}
""")
    assert findings(text, "IST0128") == []


def test_port_level_mutual_tls_without_ca_certificates_is_ist0129():
    text = dr("db-mtls", """
  host: mydbserver.prod.svc.cluster.local
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: MUTUAL, clientCertificate: /etc/certs/c.pem, privateKey: /etc/certs/k.pem}
""")
    finding = only(text, "IST0129", "DestinationRule default/db-mtls")
    assert finding.level == Level.WARNING
    assert finding.message == ("DestinationRule default/db-mtls in namespace default has TLS mode set to MUTUAL but no "
                               "caCertificates are set to validate server identity for host: "
                               "mydbserver.prod.svc.cluster.local at port number:443")
    assert findings(text, "IST0128") == []


def test_port_level_tls_with_ca_certificates_is_not_ist0129():
    text = dr("db-tls", """
  host: mydbserver.prod.svc.cluster.local
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE, caCertificates: /etc/certs/ca.pem}
""")
    assert findings(text, "IST0129") == []


# IST0173 --------------------------------------------------------------------------------------

def test_subset_selecting_no_pods_is_ist0173():
    text = REVIEWS + dr("reviews", """
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v4, labels: {version: v4}}
""")
    finding = only(text, "IST0173", "DestinationRule default/reviews")
    assert finding.level == Level.ERROR
    assert finding.message == ("The Subset v4 defined in the DestinationRule does not select any pods. "
                               "Which may lead to 503 UH (NoHealthyUpstream).")


def test_subsets_selecting_pods_are_fine():
    text = REVIEWS + dr("reviews", """
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: all}
""")
    assert findings(text, "IST0173") == []


def test_subset_on_node_topology_labels_is_not_judged_without_nodes():
    text = REVIEWS + dr("reviews", """
  host: reviews
  subsets:
  - {name: west, labels: {topology.kubernetes.io/region: us-west, version: v1}}
""")
    assert findings(text, "IST0173") == []


def test_service_entry_endpoint_labels_satisfy_a_subset():
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
---
""" + dr("legacy", """
  host: legacy.internal
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
""")
    assert [f.message.split(" ")[2] for f in findings(text, "IST0173")] == ["v2"]


# IST0174 --------------------------------------------------------------------------------------

def test_destination_rule_for_a_host_with_no_service_is_ist0174():
    text = REVIEWS + dr("reviews", """
  host: reveiws
""")
    finding = only(text, "IST0174", "DestinationRule default/reviews")
    assert finding.level == Level.WARNING
    assert finding.message == "The host reveiws defined in the DestinationRule does not match any services in the mesh."


def test_short_host_resolves_in_the_destination_rule_namespace():
    text = REVIEWS + dr("reviews", """
  host: reviews
""", namespace="frontend")
    assert len(findings(text, "IST0174", "DestinationRule frontend/reviews")) == 1
    assert findings(REVIEWS + dr("reviews", "  host: reviews.default.svc.cluster.local", namespace="frontend"),
                    "IST0174") == []


def test_service_entry_host_is_a_known_destination_rule_host():
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: egress}
spec:
  hosts: ["*.partner.io"]
  ports: [{number: 443, name: tls, protocol: TLS}]
---
""" + dr("partner", """
  host: api.partner.io
""", namespace="shop")
    assert findings(text, "IST0174") == []


def test_mesh_wide_wildcard_destination_rule_host_is_known():
    text = REVIEWS + dr("mesh-default", """
  host: "*.local"
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
""", namespace="istio-system")
    assert findings(text, "IST0174") == []


def test_subset_asking_for_an_empty_topology_label_selects_no_pod():
    # istio/istio testdata destinationrule-empty-topology-labels.yaml: Istio adds node labels only when set.
    findings = analyze_istio_files("destinationrule-empty-topology-labels.yaml",
                                   analyzers=("destinationrule.SubsetSelectPodAnalyzer",))
    assert [f.message for f in findings] == [
        "The Subset empty-region defined in the DestinationRule does not select any pods. Which may lead to "
        "503 UH (NoHealthyUpstream)."]


def test_subset_on_a_set_topology_label_is_not_judged_without_nodes():
    assert analyze_istio_files("destinationrule-subsets-with-topology-labels.yaml",
                               analyzers=("destinationrule.SubsetSelectPodAnalyzer",)) == []
