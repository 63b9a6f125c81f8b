"""ServiceEntry analyzers: addresses for TCP (IST0134), conflicting protocols (IST0177)."""

from tests.analyze.grid import analyze_istio_files
from tests.support.analysis import analyze_yaml

ADDRESSES = ("serviceentry.ProtocolAddressesAnalyzer",)
CONFLICTS = ("serviceentry.ConflictingServiceEntryProtocolAnalyzer",)


def origins(findings, code):
    return sorted(f.origin for f in findings if f.code == code)


def test_tcp_service_entry_without_addresses_needs_them():
    findings = analyze_istio_files("serviceentry-missing-addresses-protocol.yaml", analyzers=ADDRESSES)
    assert origins(findings, "IST0134") == ["ServiceEntry default/service-entry-test-03",
                                            "ServiceEntry default/service-entry-test-04",
                                            "ServiceEntry default/service-entry-test-07"]
    assert findings[0].message == "ServiceEntry addresses are required for this protocol."


def test_lowercase_tcp_protocol_counts_as_tcp():
    findings = analyze_istio_files("serviceentry-address-required-lowercase.yaml", analyzers=ADDRESSES)
    assert origins(findings, "IST0134") == ["ServiceEntry default/address-missing-lowercase"]


def test_dns_proxy_auto_allocation_supplies_the_addresses():
    findings = analyze_istio_files("serviceentry-missing-addresses-protocol.yaml", analyzers=ADDRESSES,
                                   mesh_config="serviceentry-missing-addresses-protocol-mesh-cfg.yaml")
    assert findings == []


def test_addresses_allocated_in_status_count():
    findings = analyze_istio_files("serviceentry-address-allocated.yaml", analyzers=ADDRESSES,
                                   mesh_config="serviceentry-address-allocated-mesh-cfg.yaml")
    assert findings == []


def test_http_only_service_entry_needs_no_addresses():
    findings = analyze_yaml("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{name: https, number: 443, protocol: HTTPS}]
  resolution: DNS
""")
    assert origins(findings, "IST0134") == []


def test_same_host_and_port_with_two_protocols_is_reported_on_both_entries():
    findings = analyze_istio_files("serviceentry-conflicting-protocol.yaml", analyzers=CONFLICTS)
    assert origins(findings, "IST0177") == ["ServiceEntry default/se-http", "ServiceEntry default/se-https"]
    assert findings[0].message == ('Multiple ServiceEntries (default/se-http, default/se-https) define the same '
                                   'host "example.com" and port 13835 with conflicting protocols (HTTP, HTTPS).')


def test_same_protocol_twice_is_no_conflict():
    assert analyze_istio_files("serviceentry-no-conflict-protocol.yaml", analyzers=CONFLICTS) == []


def test_entries_exported_to_different_namespaces_do_not_conflict():
    assert analyze_istio_files("serviceentry-conflicting-exportto.yaml", analyzers=CONFLICTS) == []
