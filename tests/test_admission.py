"""Can the cluster create pods in the mesh?  The injector webhook, revisions and refused pod creation.

The webhook configuration below is Istio's own (manifests/charts/istio-control/istio-discovery/templates/
mutatingwebhook.yaml as rendered for revision "default"); the FailedCreate message is the kube-apiserver's.
"""

from __future__ import annotations

from commands.checks.admission import admission_findings
from commands.checks.registry import CheckContext
from tests.support.analysis import snapshot_from_yaml

WEBHOOK = """
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: istio-sidecar-injector
  labels: {app: sidecar-injector, istio.io/rev: default}
webhooks:
- name: rev.namespace.sidecar-injector.istio.io
  clientConfig: {service: {name: istiod, namespace: istio-system, path: /inject, port: 443}}
  failurePolicy: Fail
  namespaceSelector:
    matchExpressions:
    - {key: istio.io/rev, operator: In, values: [default]}
    - {key: istio-injection, operator: DoesNotExist}
  objectSelector:
    matchExpressions:
    - {key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}
- name: rev.object.sidecar-injector.istio.io
  clientConfig: {service: {name: istiod, namespace: istio-system, path: /inject, port: 443}}
  failurePolicy: Fail
  namespaceSelector:
    matchExpressions:
    - {key: istio.io/rev, operator: DoesNotExist}
    - {key: istio-injection, operator: DoesNotExist}
  objectSelector:
    matchExpressions:
    - {key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}
    - {key: istio.io/rev, operator: In, values: [default]}
- name: namespace.sidecar-injector.istio.io
  clientConfig: {service: {name: istiod, namespace: istio-system, path: /inject, port: 443}}
  failurePolicy: Fail
  namespaceSelector:
    matchExpressions:
    - {key: istio-injection, operator: In, values: [enabled]}
  objectSelector:
    matchExpressions:
    - {key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}
- name: object.sidecar-injector.istio.io
  clientConfig: {service: {name: istiod, namespace: istio-system, path: /inject, port: 443}}
  failurePolicy: Fail
  namespaceSelector:
    matchExpressions:
    - {key: istio-injection, operator: DoesNotExist}
    - {key: istio.io/rev, operator: DoesNotExist}
  objectSelector:
    matchExpressions:
    - {key: sidecar.istio.io/inject, operator: In, values: ["true"]}
    - {key: istio.io/rev, operator: DoesNotExist}
"""

ISTIOD_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: istiod, namespace: istio-system}
spec:
  selector: {app: istiod, istio: pilot}
  ports: [{name: https-webhook, port: 443, targetPort: 15017}]
"""

NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: payments, labels: {istio.io/rev: default}}
---
apiVersion: v1
kind: Namespace
metadata: {name: batch}
"""


def istiod_pod(ready: bool) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: istiod-5d8f7c9b6-qx7wz, namespace: istio-system, labels: {{app: istiod, istio: pilot}}}}
spec: {{containers: [{{name: discovery, image: docker.io/istio/pilot:1.24.2}}]}}
status:
  phase: Running
  conditions: [{{type: Ready, status: "{'True' if ready else 'False'}"}}]
"""


def run(*documents: str, namespace: str | None = None):
    snapshot = snapshot_from_yaml("\n---\n".join(d.strip("\n") for d in documents))
    return list(admission_findings(CheckContext(snapshot=snapshot, namespace=namespace)))


def codes_of(findings):
    return [f.code for f in findings]


def test_injector_with_no_ready_istiod_refuses_new_pods_in_the_namespaces_it_selects():
    [finding] = run(WEBHOOK, ISTIOD_SERVICE, NAMESPACES, istiod_pod(ready=False))
    assert finding.code == "MB1040"
    assert finding.evidence["namespaces"] == ["payments", "prod"]
    assert "new pods in payments, prod are refused" in finding.message
    assert "delete" not in (finding.remediation.command or "")


def test_injector_with_a_ready_istiod_is_quiet():
    assert run(WEBHOOK, ISTIOD_SERVICE, NAMESPACES, istiod_pod(ready=True)) == []


def test_injector_that_fails_open_is_not_an_outage_for_new_pods():
    assert run(WEBHOOK.replace("failurePolicy: Fail", "failurePolicy: Ignore"), ISTIOD_SERVICE, NAMESPACES) == []


def test_injector_whose_service_selects_no_pod_says_so():
    [finding] = run(WEBHOOK, ISTIOD_SERVICE, NAMESPACES)
    assert "selects no pod" in finding.message


def test_namespace_scope_only_reports_the_webhook_when_it_selects_that_namespace():
    assert run(WEBHOOK, ISTIOD_SERVICE, NAMESPACES, istiod_pod(ready=False), namespace="batch") == []
    assert codes_of(run(WEBHOOK, ISTIOD_SERVICE, NAMESPACES, istiod_pod(ready=False), namespace="prod")) == ["MB1040"]


def test_namespace_asking_for_a_revision_no_webhook_serves_is_an_error():
    canary = """
apiVersion: v1
kind: Namespace
metadata: {name: checkout, labels: {istio.io/rev: 1-24-canary}}
"""
    findings = run(WEBHOOK, ISTIOD_SERVICE, NAMESPACES, canary, istiod_pod(ready=True))
    [finding] = findings
    assert finding.code == "MB1041"
    assert finding.origin == "Namespace checkout"
    assert "revision 1-24-canary" in finding.message and "[default]" in finding.message
    assert finding.remediation.command == "kubectl label namespace checkout istio.io/rev=default --overwrite"


def test_namespace_with_injection_disabled_and_a_revision_label_is_not_reported():
    # istio-injection wins over istio.io/rev: the namespace has opted out.
    opted_out = """
apiVersion: v1
kind: Namespace
metadata: {name: legacy, labels: {istio-injection: disabled, istio.io/rev: 1-24-canary}}
"""
    assert run(WEBHOOK, ISTIOD_SERVICE, opted_out, istiod_pod(ready=True)) == []


def test_a_revision_tag_webhook_serves_the_namespaces_labelled_with_the_tag():
    tag = WEBHOOK.replace("name: istio-sidecar-injector", "name: istio-revision-tag-stable").replace(
        "istio.io/rev: default}", "istio.io/rev: 1-24-2, istio.io/tag: stable}").replace(
        "values: [default]", "values: [stable]")
    stable = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/rev: stable}}
"""
    assert run(WEBHOOK, tag, ISTIOD_SERVICE, stable, istiod_pod(ready=True)) == []


FAILED_CREATE = ('Error creating: Internal error occurred: failed calling webhook '
                 '"namespace.sidecar-injector.istio.io": failed to call webhook: Post '
                 '"https://istiod.istio-system.svc:443/inject?timeout=10s": no endpoints available for service "istiod"')


def failed_create_event(count: int) -> str:
    """The ReplicaSet controller's Warning Event for pods the webhook refused."""
    return f"""
apiVersion: v1
kind: Event
metadata: {{name: payment-7d9f8c6b5.17c2a, namespace: prod}}
involvedObject: {{kind: ReplicaSet, name: payment-7d9f8c6b5, namespace: prod}}
reason: FailedCreate
type: Warning
count: {count}
lastTimestamp: "2026-12-07T03:06:00Z"
message: '{FAILED_CREATE}'
"""


def test_failed_create_events_from_the_webhook_say_the_workload_cannot_replace_its_pods():
    event = failed_create_event(count=14)
    [finding] = run(event)
    assert finding.code == "MB1042"
    assert finding.origin == "ReplicaSet prod/payment-7d9f8c6b5"
    assert "14 times" in finding.message
    assert finding.evidence["webhook"] is True
    assert "rather than restarting" in finding.remediation.summary


def test_a_deployment_replica_failure_is_reported_once_with_its_replicaset_events():
    deployment = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: payment, namespace: prod}}
spec: {{replicas: 2}}
status:
  conditions:
  - {{type: ReplicaFailure, status: "True", reason: FailedCreate, message: '{FAILED_CREATE}',
      lastUpdateTime: "2026-12-07T03:06:00Z"}}
"""
    event = failed_create_event(count=3)
    assert [f.origin for f in run(deployment, event)] == ["Deployment prod/payment"]


def test_normal_events_and_other_warnings_are_not_refused_pods():
    event = """
apiVersion: v1
kind: Event
metadata: {name: payment-7d9f8c6b5-x2x4k.1, namespace: prod}
involvedObject: {kind: Pod, name: payment-7d9f8c6b5-x2x4k, namespace: prod}
reason: BackOff
type: Warning
count: 5
message: Back-off restarting failed container istio-proxy
"""
    assert run(event) == []
