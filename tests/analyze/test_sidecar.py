"""Sidecar analyzers: IST0101 selectors matching nothing, IST0110 overlapping, IST0111 missing selectors."""

from commands.findings import Level
from tests.support.analysis import analyze_yaml, with_code

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: bookinfo, labels: {app: reviews, version: v1}}
spec: {containers: [{name: reviews, image: 'reviews:1'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-v1, namespace: bookinfo, labels: {app: ratings, version: v1}}
spec: {containers: [{name: ratings, image: 'ratings:1'}]}
---
"""


def sidecar(name: str, selector: str | None = None, namespace: str = "bookinfo") -> str:
    workload_selector = f"workloadSelector: {{labels: {selector}}}" if selector is not None else ""
    return f"""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  egress: [{{hosts: ['./*']}}]
  {workload_selector}
---
"""


def sidecar_findings(text: str, code: str):
    return [f for f in with_code(analyze_yaml(text), code) if f.origin.startswith("Sidecar ")]


# IST0101 ReferencedResourceNotFound (selector) -------------------------------------------------

def test_sidecar_selector_matching_no_pod_is_ist0101():
    (finding,) = sidecar_findings(PODS + sidecar("details", "{app: details, version: v1}"), "IST0101")
    assert finding.level is Level.ERROR
    assert finding.origin == "Sidecar bookinfo/details"
    assert finding.message == 'Referenced selector not found: "app=details,version=v1"'


def test_sidecar_selector_matching_a_pod_in_another_namespace_only_is_ist0101():
    (finding,) = sidecar_findings(PODS + sidecar("reviews", "{app: reviews}", namespace="other"), "IST0101")
    assert finding.origin == "Sidecar other/reviews"


def test_sidecar_selector_matching_a_pod_is_not_ist0101():
    assert sidecar_findings(PODS + sidecar("reviews", "{app: reviews}"), "IST0101") == []


def test_sidecar_selector_matching_a_workload_entry_is_not_ist0101():
    entry = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: bookinfo}
spec: {address: 10.0.0.7, labels: {app: legacy}}
---
"""
    assert sidecar_findings(PODS + entry + sidecar("legacy", "{app: legacy}"), "IST0101") == []


def test_sidecar_without_selector_is_not_ist0101():
    assert sidecar_findings(PODS + sidecar("default"), "IST0101") == []


# IST0110 ConflictingSidecarWorkloadSelectors ---------------------------------------------------

def test_two_sidecars_selecting_the_same_pod_are_ist0110_each():
    text = PODS + sidecar("by-app", "{app: reviews}") + sidecar("by-version", "{version: v1, app: reviews}")
    findings = sidecar_findings(text, "IST0110")
    assert sorted(f.origin for f in findings) == ["Sidecar bookinfo/by-app", "Sidecar bookinfo/by-version"]
    assert all(f.level is Level.ERROR for f in findings)
    assert findings[0].message == ('The Sidecars [by-app by-version] in namespace "bookinfo" select the same '
                                   'workload pod "reviews-v1", which can lead to undefined behavior.')


def test_sidecars_selecting_different_pods_are_not_ist0110():
    text = PODS + sidecar("reviews", "{app: reviews}") + sidecar("ratings", "{app: ratings}")
    assert sidecar_findings(text, "IST0110") == []


def test_same_selector_in_different_namespaces_is_not_ist0110():
    other = PODS.replace("namespace: bookinfo", "namespace: other")
    text = PODS + other + sidecar("a", "{app: reviews}") + sidecar("b", "{app: reviews}", namespace="other")
    assert sidecar_findings(text, "IST0110") == []


# IST0111 MultipleSidecarsWithoutWorkloadSelectors ----------------------------------------------

def test_two_sidecars_without_selector_in_one_namespace_are_ist0111_each():
    findings = sidecar_findings(sidecar("one") + sidecar("two"), "IST0111")
    assert sorted(f.origin for f in findings) == ["Sidecar bookinfo/one", "Sidecar bookinfo/two"]
    assert all(f.level is Level.ERROR for f in findings)
    assert findings[0].message == ('The Sidecars [one two] in namespace "bookinfo" have no workload selector, '
                                   'which can lead to undefined behavior.')


def test_one_default_sidecar_per_namespace_is_not_ist0111():
    assert sidecar_findings(sidecar("one") + sidecar("two", namespace="other"), "IST0111") == []


def test_default_sidecar_next_to_a_selecting_sidecar_is_not_ist0111():
    assert sidecar_findings(PODS + sidecar("one") + sidecar("reviews", "{app: reviews}"), "IST0111") == []
