"""Several DestinationRules for one host (docs/outage-classes.md): which rule each caller namespace's sidecar gets, as
istiod picks it (istio/istio pilot/pkg/model/push_context.go destinationRule, destination_rule.go
mergeDestinationRule), and what the settings of the others would have done.

The objects are shaped like ``kubectl get -o yaml`` output of Istio's Bookinfo reviews service; the last test reads
them from an emulated API server (kmock) through the same client a live diagnosis uses.
"""

from __future__ import annotations

import json

import yaml

from commands.catalog import default_checks
from commands.checks.registry import CheckContext
from commands.checks.traffic import traffic_policy
from commands.cluster.snapshot import Snapshot
from commands.cluster.sources.kube import KubeSource
from commands.findings import Finding, Level
from tests.support.analysis import snapshot_from_yaml
from tests.support.injected import injected_pod
from tests.support.kube import FakeKube

REVIEWS = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: prod, labels: {app: reviews, service: reviews}}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 9080}
"""

# The service owner's rule: subsets for the VirtualService's canary routes, and outlier detection.
OWNERS_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: prod, creationTimestamp: "2026-11-02T09:00:00Z"}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

# A calling team's tuning in its own namespace: it wins for its callers and carries no subsets.
CALLERS_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-pool, namespace: frontend, creationTimestamp: "2026-11-20T14:30:00Z"}
spec:
  host: reviews.prod.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http: {http1MaxPendingRequests: 100, idleTimeout: 30s}
"""

MESH_WIDE_MTLS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: default, namespace: istio-system, creationTimestamp: "2026-10-01T08:00:00Z"}
spec:
  host: "*.local"
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
"""


def pods(*namespaces: str) -> list[str]:
    return [json.dumps(injected_pod(f"app-{ns}-7d9f8c6b5-abcde", ns, {"app": f"app-{ns}"})) for ns in namespaces]


def docs(*parts: str) -> str:
    return "\n---\n".join(part.strip() for part in parts)


def run(*parts: str) -> list[Finding]:
    return [f for f in traffic_policy(CheckContext(snapshot=snapshot_from_yaml(docs(*parts))))
            if f.code in ("MB5020", "MB5021")]


def test_a_callers_own_rule_hides_the_owners_subsets_and_outlier_detection_from_that_caller_only():
    [finding] = run(REVIEWS, OWNERS_RULE, CALLERS_RULE, *pods("frontend", "prod"))

    assert finding.code == "MB5020" and finding.level is Level.WARNING
    assert finding.origin == "DestinationRule prod/reviews"
    assert "callers of reviews.prod in frontend" in finding.message
    assert "DestinationRule frontend/reviews-pool is used instead: its own namespace frontend comes first" in (
        finding.message)
    assert "its outlierDetection ejects no host" in finding.message
    assert "its subsets v1, v2 do not exist for them, so routes to them find no cluster (NC, 503)" in finding.message
    assert finding.evidence["callers"] == ["frontend"]


def test_rules_for_one_host_in_one_namespace_merge_and_only_the_oldest_traffic_policy_is_used():
    newer = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-canary, namespace: prod, creationTimestamp: "2026-11-25T10:00:00Z"}
spec:
  host: reviews.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
  subsets:
  - {name: v1, labels: {version: v1-canary}}
  - {name: v3, labels: {version: v3}}
"""
    [finding] = run(REVIEWS, OWNERS_RULE, newer, *pods("prod"))

    assert finding.code == "MB5020" and finding.origin == "DestinationRule prod/reviews-canary"
    assert "merged into DestinationRule prod/reviews merged with DestinationRule prod/reviews-canary" in (
        finding.message)
    assert "only the oldest trafficPolicy (DestinationRule prod/reviews) is used" in finding.message
    assert "its loadBalancer setting is not used" in finding.message
    assert "its subset v1 is taken from DestinationRule prod/reviews" in finding.message
    # v3 is new to the merged rule, so it is added and loses nothing.
    assert "v3" not in finding.message


def test_a_mesh_wide_wildcard_rule_is_not_inherited_by_a_host_with_its_own_rule():
    findings = run(REVIEWS, OWNERS_RULE, MESH_WIDE_MTLS, *pods("frontend", "prod"))

    [finding] = findings
    assert finding.code == "MB5021" and finding.level is Level.INFO
    assert finding.origin == "DestinationRule istio-system/default"
    assert "(*.local) does not apply to 1 host with a more specific rule (reviews.prod)" in finding.message
    assert "its tls mode ISTIO_MUTUAL is not used" in finding.message
    assert finding.evidence["hosts"]["reviews.prod"] == {"used": ["DestinationRule prod/reviews"],
                                                         "callers": ["frontend", "istio-system", "prod"]}


def test_a_wildcard_rule_stopped_by_many_hosts_is_one_finding_that_counts_them():
    ratings = OWNERS_RULE.replace("name: reviews,", "name: ratings,").replace("host: reviews", "host: ratings")
    ratings_service = REVIEWS.replace("reviews", "ratings")

    [finding] = run(REVIEWS, ratings_service, OWNERS_RULE, ratings, MESH_WIDE_MTLS, *pods("prod"))

    assert "does not apply to 2 hosts with a more specific rule (ratings.prod, reviews.prod)" in finding.message


def test_a_rule_private_to_the_services_namespace_leaves_other_callers_to_the_mesh_wide_rule():
    private = OWNERS_RULE.replace("host: reviews\n", "host: reviews\n  exportTo: ['.']\n")

    [finding] = run(REVIEWS, private, MESH_WIDE_MTLS, *pods("frontend", "prod"))

    # Only prod's callers see the private rule; for frontend the mesh-wide rule is the one used, which is by design.
    assert finding.code == "MB5021" and finding.evidence["hosts"]["reviews.prod"]["callers"] == ["prod"]


def run_with_mesh_config(mesh_config: dict, *parts: str) -> list[Finding]:
    snapshot = snapshot_from_yaml(docs(*parts))
    snapshot.mesh_config = mesh_config  # what KubeSource reads from the istio ConfigMap's `mesh` key
    return [f for f in traffic_policy(CheckContext(snapshot=snapshot)) if f.code in ("MB5020", "MB5021")]


def test_a_mesh_default_export_to_dot_keeps_a_rule_without_export_to_in_its_namespace():
    # meshConfig.defaultDestinationRuleExportTo: ["."]: the owners' rule (no exportTo of its own) is prod's alone,
    # so frontend's callers get the mesh-wide rule by design and only prod's callers lose the wildcard's settings.
    mesh_wide = MESH_WIDE_MTLS.replace('host: "*.local"\n', 'host: "*.local"\n  exportTo: ["*"]\n')
    default_private = {"defaultDestinationRuleExportTo": ["."]}
    [finding] = run_with_mesh_config(default_private, REVIEWS, OWNERS_RULE, mesh_wide, *pods("frontend", "prod"))

    assert finding.code == "MB5021" and finding.evidence["hosts"]["reviews.prod"]["callers"] == ["prod"]
    # Without an exportTo of its own, the mesh-wide rule is private to the root namespace as well: istiod gives it to
    # the root namespace's proxies only, so no caller in frontend or prod consults it and nothing is lost to it.
    assert run_with_mesh_config(default_private, REVIEWS, OWNERS_RULE, MESH_WIDE_MTLS, *pods("frontend", "prod")) == []


def test_a_mesh_default_export_to_naming_namespaces_is_not_honoured_so_rules_stay_exported_everywhere():
    # push_context.go honours only "." and "*" in the default: a list of namespaces leaves the rule public.
    for default in (["istio-system"], ["*"], None):
        mesh_config = {} if default is None else {"defaultDestinationRuleExportTo": default}
        [finding] = run_with_mesh_config(mesh_config, REVIEWS, OWNERS_RULE, MESH_WIDE_MTLS, *pods("frontend", "prod"))
        assert finding.evidence["hosts"]["reviews.prod"]["callers"] == ["frontend", "istio-system", "prod"], default


def test_a_public_rule_in_the_root_namespace_loses_to_the_services_rule_even_for_the_gateway_there():
    root_rule = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-gateway, namespace: istio-system, creationTimestamp: "2026-11-21T10:00:00Z"}
spec:
  host: reviews.prod.svc.cluster.local
  trafficPolicy:
    tls: {mode: DISABLE}
"""
    [finding] = run(REVIEWS, OWNERS_RULE, root_rule, *pods("istio-system", "prod"))

    # push_context.go: a root-namespace proxy looks at the root's private rules first, then the Service's namespace.
    assert finding.code == "MB5020" and finding.origin == "DestinationRule istio-system/reviews-gateway"
    assert finding.evidence["callers"] == ["istio-system", "prod"]
    assert "its tls mode DISABLE is not used" in finding.message


def test_one_rule_per_host_or_rules_for_other_hosts_stay_quiet():
    ratings = OWNERS_RULE.replace("name: reviews,", "name: ratings,").replace("host: reviews", "host: ratings")

    assert run(REVIEWS, OWNERS_RULE, *pods("frontend", "prod")) == []
    assert run(REVIEWS, OWNERS_RULE, ratings, *pods("frontend", "prod")) == []


def test_a_rule_of_a_third_namespace_is_its_own_callers_business():
    # frontend's rule is exported everywhere, but istiod reads another namespace's rules only from the Service's
    # namespace and the root: callers in prod never consult it, so nothing is lost for them.
    [finding] = run(REVIEWS, OWNERS_RULE, CALLERS_RULE, *pods("prod", "frontend"))

    assert finding.evidence["callers"] == ["frontend"]


def test_a_live_diagnosis_reads_the_rules_from_the_api_server_and_reports_the_lost_subsets(kube: FakeKube):
    objects = [yaml.safe_load(part) for part in (REVIEWS, OWNERS_RULE, CALLERS_RULE)]
    objects += [injected_pod("productpage-v1-7d9f8c6b5-x2x4z", "frontend", {"app": "productpage"}),
                injected_pod("reviews-v2-5b6c7d8e9-q8w7e", "prod", {"app": "reviews", "version": "v2"})]
    for obj in objects:
        obj.setdefault("apiVersion", "v1")
    kube.add(*objects)

    findings = default_checks().diagnose(["traffic-policy"], KubeSource(kube.client()))

    lost = [f for f in findings if f.code == "MB5020"]
    assert [f.origin for f in lost] == ["DestinationRule prod/reviews"]
    assert "subsets v1, v2 do not exist for them" in lost[0].message


def test_a_rule_with_a_workload_selector_serves_its_pods_and_leaves_the_others_of_its_namespace_with_no_rule():
    # sidecar.go SidecarScope.DestinationRule: the selector rule for the pods it selects; for frontend's other pods
    # the lookup stopped at frontend (it has a rule for the host) and finds no rule without a selector there: they
    # get none, not the owner's, and routes to the owner's subsets find no cluster.
    selected = CALLERS_RULE.replace("spec:\n", "spec:\n  workloadSelector:\n    matchLabels: {app: productpage}\n")
    productpage = json.dumps(injected_pod("productpage-v1-7d9f8c6b5-x2x4z", "frontend", {"app": "productpage"}))

    findings = run(REVIEWS, OWNERS_RULE, selected, *pods("frontend", "prod"), productpage)

    by_callers = {tuple(f.evidence["callers"]): f for f in findings}
    assert set(by_callers) == {("frontend (pods with app=productpage)",), ("frontend (pods that no workloadSelector "
                                                                            "selects)",)}
    assert all(f.code == "MB5020" and f.origin == "DestinationRule prod/reviews" for f in findings)
    chosen = by_callers[("frontend (pods with app=productpage)",)]
    assert chosen.evidence["used"] == ["DestinationRule frontend/reviews-pool"]
    assert "its workloadSelector selects these pods" in chosen.message
    left_out = by_callers[("frontend (pods that no workloadSelector selects)",)]
    assert left_out.evidence["used"] == []
    assert "these pods get no rule for the host" in left_out.message
    assert "its subsets v1, v2 do not exist for them, so routes to them find no cluster (NC, 503)" in left_out.message


def test_a_gateway_selected_by_a_rule_of_its_namespace_is_a_caller_that_loses_the_owners_subsets():
    # A common pattern: a rule in the gateway's namespace selecting the ingress gateway (TLS or pool settings for
    # it alone). The gateway then gets that rule, without the owner's subsets its VirtualService routes to.
    for_gateway = CALLERS_RULE.replace("namespace: frontend,", "namespace: istio-ingress,").replace(
        "spec:\n", "spec:\n  workloadSelector:\n    matchLabels: {istio: ingressgateway}\n")
    gateway = json.dumps(injected_pod("istio-ingressgateway-5d8f7c9b6-h4k2m", "istio-ingress",
                                      {"istio": "ingressgateway", "app": "istio-ingressgateway"}))

    [finding] = run(REVIEWS, OWNERS_RULE, for_gateway, *pods("prod"), gateway)

    assert finding.origin == "DestinationRule prod/reviews"
    assert finding.evidence["callers"] == ["istio-ingress (pods with istio=ingressgateway)"]
    assert "its subsets v1, v2 do not exist for them" in finding.message


def test_a_selector_rule_beside_a_rule_without_one_leaves_the_unselected_pods_the_rule_without():
    selected = CALLERS_RULE.replace("spec:\n", "spec:\n  workloadSelector:\n    matchLabels: {app: productpage}\n")
    frontend_default = OWNERS_RULE.replace("namespace: prod,", "namespace: frontend,").replace(
        "host: reviews\n", "host: reviews.prod.svc.cluster.local\n").replace("name: reviews,", "name: reviews-all,")
    productpage = json.dumps(injected_pod("productpage-v1-7d9f8c6b5-x2x4z", "frontend", {"app": "productpage"}))

    findings = run(REVIEWS, OWNERS_RULE, selected, frontend_default, *pods("frontend", "prod"), productpage)

    # The unselected pods get frontend's own rule without a selector (the owner's is lost to it, as for any caller
    # namespace with its own rule); the selected ones get the selector rule: frontend's other rule and the owner's
    # are both lost for them.
    def lost_for(callers: str) -> dict[str, list[str]]:
        return {f.origin: f.evidence["used"] for f in findings if f.evidence["callers"] == [callers]}

    assert lost_for("frontend (pods that no workloadSelector selects)") == {
        "DestinationRule prod/reviews": ["DestinationRule frontend/reviews-all"]}
    assert lost_for("frontend (pods with app=productpage)") == {
        "DestinationRule prod/reviews": ["DestinationRule frontend/reviews-pool"],
        "DestinationRule frontend/reviews-all": ["DestinationRule frontend/reviews-pool"]}


def test_an_empty_snapshot_has_nothing_to_weigh():
    assert traffic_policy(CheckContext(snapshot=Snapshot())) == []
