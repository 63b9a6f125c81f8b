"""Deployment analyzers: Services that disagree about one workload (IST0116, IST0137), UID 1337 (IST0144)."""

from commands.analyze import run_analyzers
from commands.checks.registry import CheckContext
from tests.analyze.grid import analyze_istio_files
from tests.support.analysis import snapshot_from_yaml

SERVICES = ("deployment.ServiceAssociationAnalyzer",)
UID = ("deployment.ApplicationUIDAnalyzer",)


def messages(findings, origin):
    return [f.message for f in findings if f.origin == origin]


def test_port_served_as_tcp_and_udp_by_two_services_is_reported():
    findings = analyze_istio_files("deployment-multi-service.yaml", analyzers=SERVICES)
    assert messages(findings, "Deployment bookinfo/multiple-svc-multiple-prot") == [
        "This deployment multiple-svc-multiple-prot is associated with multiple services using port 9080 but "
        "different protocols: [bookinfo/details-http-v1 bookinfo/details-tcp-v1]"]


def test_one_target_port_behind_two_service_ports_is_reported():
    findings = analyze_istio_files("deployment-multi-service.yaml", analyzers=SERVICES)
    assert messages(findings, "Deployment bookinfo/conflicting-ports") == [
        'This deployment conflicting-ports is associated with multiple services [bookinfo/conflicting-ports-1 '
        'bookinfo/conflicting-ports-2] using targetPort "9080" but different ports: [9080 9090].']


def test_services_in_another_namespace_do_not_count():
    assert analyze_istio_files("deployment-multi-service-different-ns.yaml", analyzers=SERVICES) == []


def test_services_without_selector_do_not_count():
    assert analyze_istio_files("deployment-service-no-selector.yaml", analyzers=SERVICES) == []


def test_pod_running_as_uid_1337_bypasses_the_sidecar():
    findings = analyze_istio_files("pod-sec-uid.yaml", analyzers=UID)
    assert [(f.code, f.origin) for f in findings] == [("IST0144", "Pod default/pod-sec-uid")]


def test_deployment_container_running_as_uid_1337_is_reported():
    findings = analyze_istio_files("deployment-con-sec-uid.yaml", analyzers=UID)
    assert [(f.code, f.origin) for f in findings] == [("IST0144", "Deployment default/deploy-con-sec-uid")]


def test_only_the_proxy_container_running_as_1337_is_fine():
    snapshot = snapshot_from_yaml("""
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: default}
spec:
  containers:
  - {name: app, image: app, securityContext: {runAsUser: 1000}}
  - {name: istio-proxy, image: proxyv2, securityContext: {runAsUser: 1337}}
""")
    assert run_analyzers(CheckContext(snapshot=snapshot), only=UID) == []
