"""VirtualService rules no request reaches (IST0130) and matches an earlier rule takes (IST0131)."""

from tests.analyze.grid import analyze_istio_files
from tests.support.analysis import analyze_yaml

ANALYZER = ("virtualservice.MatchAnalyzer",)
FILES = ("virtualservice_dupmatches.yaml", "virtualservice_overlappingmatches.yaml")


def about(origin):
    return [(f.code, f.message) for f in analyze_istio_files(*FILES, analyzers=ANALYZER) if f.origin == origin]


def test_rule_whose_matches_all_repeat_an_earlier_rule_is_unreachable():
    assert about("VirtualService default/duplicate-match") == [
        ("IST0131", 'VirtualService rule "send /api/v1/products to sample.bar" match #0 is not used '
                    '(duplicate/overlapping match in rule "send /api/v1/products to sample.foo").'),
        ("IST0130", 'VirtualService rule "send /api/v1/products to sample.bar" not used '
                    "(all matches used by prior rules)."),
    ]


def test_rule_after_a_catch_all_rule_is_unreachable():
    assert about("VirtualService foo/sample-foo-cluster01") == [
        ("IST0130", "VirtualService rule #1 not used (only the last rule can have no matches).")]


def test_longer_prefix_after_a_shorter_one_is_an_ineffective_match():
    assert [code for code, _ in about("VirtualService default/overlapping-in-two-matches")] == ["IST0131"]


def test_tcp_and_tls_duplicates_are_found_too():
    assert [code for code, _ in about("VirtualService default/duplicate-tcp-match")] == ["IST0131", "IST0130"]
    assert [code for code, _ in about("VirtualService none/tls-routing")] == ["IST0131", "IST0130"]


def test_distinct_matches_with_a_final_catch_all_are_fine():
    findings = analyze_yaml("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /v2}}, {headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /v1}, ignoreUriCase: false}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
""")
    assert [f for f in findings if f.code in ("IST0130", "IST0131")] == []


def test_only_a_name_differs_is_still_a_duplicate():
    findings = analyze_yaml("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{name: a, uri: {exact: /x}}]
    route: [{destination: {host: reviews}}]
  - match: [{name: b, uri: {exact: /x}}]
    route: [{destination: {host: reviews}}]
""")
    assert sorted(f.code for f in findings if f.code in ("IST0130", "IST0131")) == ["IST0130", "IST0131"]
