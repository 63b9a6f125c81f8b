"""Host names and the per-snapshot host index the routing analyzers share."""

from commands.analyze.hosts import HostIndex, host_matches, to_fqdn, visible_namespaces, wildcard_suffixes
from tests.support.analysis import snapshot_from_yaml

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  ports: [{port: 9080}]
---
apiVersion: v1
kind: Service
metadata:
  name: private
  namespace: bookinfo
  annotations: {networking.istio.io/exportTo: "."}
spec:
  ports: [{port: 80}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: example, namespace: egress}
spec:
  hosts: ["*.example.com"]
  ports: [{number: 443, name: https, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: egress}
spec:
  hosts: [api.partner.io]
  exportTo: [".", payments]
  ports: [{number: 443, name: https, protocol: TLS}]
"""


def index() -> HostIndex:
    return HostIndex.of(snapshot_from_yaml(SERVICES))


def test_short_name_becomes_fqdn_in_the_given_namespace():
    assert to_fqdn("reviews", "default") == "reviews.default.svc.cluster.local"


def test_dotted_and_wildcard_hosts_are_left_as_written():
    assert to_fqdn("reviews.bookinfo.svc.cluster.local", "default") == "reviews.bookinfo.svc.cluster.local"
    assert to_fqdn("api.example.com", "default") == "api.example.com"
    assert to_fqdn("*.example.com", "default") == "*.example.com"


def test_cluster_domain_can_be_changed():
    assert to_fqdn("reviews", "default", "corp.internal") == "reviews.default.svc.corp.internal"


def test_wildcard_matches_subdomains_but_not_the_apex():
    assert host_matches("*.example.com", "api.example.com")
    assert host_matches("api.example.com", "*.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert not host_matches("api.example.com", "web.example.com")


def test_star_matches_every_host():
    assert host_matches("*", "api.example.com")
    assert host_matches("*", "*.example.com")


def test_wildcards_overlap_when_one_covers_the_other():
    assert host_matches("*.example.com", "*.api.example.com")
    assert not host_matches("*.example.com", "*.example.org")


def test_wildcard_suffixes_walk_the_labels_up_to_the_root():
    assert list(wildcard_suffixes("a.b.c")) == [".b.c", ".c", ""]
    assert list(wildcard_suffixes("*.b.c")) == [".b.c", ".c", ""]


def test_export_to_star_or_nothing_means_every_namespace():
    assert visible_namespaces([], "ns") is None
    assert visible_namespaces(["*", "."], "ns") is None
    assert visible_namespaces([".", "other"], "ns") == frozenset({"ns", "other"})


def test_host_index_is_built_once_per_snapshot():
    snapshot = snapshot_from_yaml(SERVICES)
    assert HostIndex.of(snapshot) is HostIndex.of(snapshot)


def test_short_service_name_is_found_only_from_its_own_namespace():
    assert index().exists("reviews", "bookinfo")
    assert not index().exists("reviews", "default")
    assert index().exists("reviews.bookinfo.svc.cluster.local", "default")


def test_lookup_returns_the_service_ports():
    assert index().lookup("reviews", "bookinfo").port_sets == [(9080,)]


def test_service_exported_to_its_namespace_is_invisible_from_others():
    assert index().exists("private.bookinfo.svc.cluster.local", "bookinfo")
    assert not index().exists("private.bookinfo.svc.cluster.local", "default")


def test_wildcard_service_entry_covers_subdomains_only():
    assert index().exists("api.example.com", "default")
    assert index().exists("*.example.com", "default")
    assert not index().exists("example.com", "default")


def test_service_entry_exported_to_another_namespace_is_visible_there():
    assert index().exists("api.partner.io", "payments")
    assert index().exists("api.partner.io", "egress")
    assert not index().exists("api.partner.io", "default")


def test_wildcard_reference_exists_when_it_covers_a_known_host():
    lookup = index().lookup("*.local", "istio-system")
    assert lookup.found and lookup.covered_by_wildcard_reference
    assert not index().exists("*.nowhere.test", "istio-system")
