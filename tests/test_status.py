"""The status check: control-plane and sidecar health read from pod status."""

from __future__ import annotations

from commands.catalog import default_checks
from commands.checks.registry import CheckContext, Thresholds
from tests.support.analysis import snapshot_from_yaml

CHECKS = default_checks()


def status_findings(yaml_text: str, *, namespace: str | None = None, thresholds: Thresholds | None = None):
    ctx = CheckContext(snapshot=snapshot_from_yaml(yaml_text), namespace=namespace,
                       thresholds=thresholds or Thresholds())
    return CHECKS.run("status", ctx)


def pod(name: str, namespace: str, *, labels: str = "{}", container: str = "istio-proxy", ready: bool = True,
        restarts: int = 0, state: str = "{running: {}}", last: str = "{}", limit: str = "1Gi",
        owner: str | None = None, resources: str | None = None) -> str:
    resources = resources or f"{{limits: {{memory: {limit}}}}}"
    owner_yaml = f"\n  ownerReferences: [{{kind: ReplicaSet, name: {owner}, apiVersion: apps/v1, uid: u}}]" if owner else ""
    return f"""
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  labels: {labels}{owner_yaml}
spec:
  containers:
  - {{name: app, image: app:1}}
  - {{name: {container}, image: "docker.io/istio/x:1.22.3", resources: {resources}}}
status:
  phase: Running
  conditions: [{{type: Ready, status: "{'True' if ready else 'False'}"}}]
  containerStatuses:
  - {{name: app, ready: true, restartCount: 0, state: {{running: {{}}}}}}
  - {{name: {container}, ready: {str(ready).lower()}, restartCount: {restarts}, state: {state}, lastState: {last}}}
---"""


HEALTHY_ISTIOD = pod("istiod-1", "istio-system", labels="{app: istiod}", container="discovery")


def codes_of(findings):
    return sorted(f.code for f in findings)


def test_healthy_mesh_reports_only_namespace_summaries():
    findings = status_findings(HEALTHY_ISTIOD + pod("web-1", "prod"))
    assert codes_of(findings) == ["MB1020"]
    assert findings[0].message == "Namespace prod: 1 sidecar, 1 ready, 0 crash-looping, 0 restarting"


def test_missing_istiod_is_an_error():
    findings = status_findings(pod("web-1", "prod"))
    assert "MB1006" in codes_of(findings)


def test_oomkilled_istiod_is_an_error_whose_action_raises_its_memory_not_a_restart():
    findings = status_findings(pod("istiod-abc-1", "istio-system", labels="{app: istiod}", container="discovery",
                                   restarts=7, last="{terminated: {reason: OOMKilled}}", limit="2Gi",
                                   owner="istiod-abc"))
    [oom] = [f for f in findings if f.code == "MB1002"]
    assert oom.level == "Error"
    assert "OOMKilled (7 restarts)" in oom.message and "2.0 GiB" in oom.message
    assert oom.remediation.command == ("kubectl -n istio-system set resources deployment/istiod -c discovery "
                                       "--limits=memory=4096Mi")
    assert oom.remediation.action == "memory istiod -n istio-system --limit 4096Mi --container discovery"
    assert "first" in oom.remediation.summary
    assert "A restart alone keeps the 2.0 GiB limit and is OOMKilled again" in oom.remediation.summary


OOM_KILLED = "{terminated: {reason: OOMKilled}}"
CRASH_LOOP = "{waiting: {reason: CrashLoopBackOff}}"


def test_oomkilled_istiod_without_a_limit_raises_its_request_because_the_node_ran_out():
    # Istio's chart requests 2048Mi and sets no limit, so an OOMKill comes from the node running out of memory.
    findings = status_findings(pod("istiod-abc-1", "istio-system", labels="{app: istiod}", container="discovery",
                                   restarts=2, last=OOM_KILLED, owner="istiod-abc",
                                   resources="{requests: {cpu: 500m, memory: 2048Mi}}"))
    [oom] = [f for f in findings if f.code == "MB1002"]
    assert oom.remediation.command == ("kubectl -n istio-system set resources deployment/istiod -c discovery "
                                       "--requests=memory=4096Mi")
    assert oom.remediation.action == "memory istiod -n istio-system --request 4096Mi --container discovery"
    assert "no memory limit" in oom.remediation.summary and "node ran out of memory" in oom.remediation.summary
    assert "stays Pending" in oom.remediation.summary  # how raising the request can make it worse
    assert "A restart alone" in oom.remediation.summary


def test_istiod_crash_looping_from_oomkills_is_told_to_raise_memory_not_to_read_the_log():
    findings = status_findings(pod("istiod-abc-1", "istio-system", labels="{app: istiod}", container="discovery",
                                   ready=False, restarts=9, state=CRASH_LOOP, last=OOM_KILLED, limit="2Gi",
                                   owner="istiod-abc"))
    [crash] = [f for f in findings if f.code == "MB1003"]
    assert crash.remediation.summary.startswith("It crash-loops because it is OOMKilled. Raise the memory limit")
    assert crash.remediation.command.endswith("--limits=memory=4096Mi")


def test_istiod_crash_looping_without_oomkills_is_told_to_read_its_previous_log():
    findings = status_findings(pod("istiod-abc-1", "istio-system", labels="{app: istiod}", container="discovery",
                                   ready=False, restarts=9, state=CRASH_LOOP, last="{terminated: {reason: Error}}",
                                   owner="istiod-abc"))
    [crash] = [f for f in findings if f.code == "MB1003"]
    assert crash.remediation.command == "kubectl -n istio-system logs istiod-abc-1 -c discovery --previous"
    assert "OOMKilled" not in crash.remediation.summary


def test_missing_istiod_points_at_every_revision_not_at_a_restart():
    [missing] = [f for f in status_findings(pod("web-1", "prod")) if f.code == "MB1006"]
    assert missing.remediation.command == "kubectl -n istio-system describe deployment -l app=istiod"
    assert missing.remediation.action is None


def test_oomkilled_sidecar_raises_its_limit_through_the_injector_keeping_the_other_resources():
    # Once one sidecar.istio.io/proxy* annotation is set the injector drops its defaults, so the patch pins them.
    findings = status_findings(HEALTHY_ISTIOD + pod(
        "payment-7d9-x2", "prod", restarts=4, last=OOM_KILLED, owner="payment-7d9",
        resources="{requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: '2', memory: 1Gi}}"))
    [oom] = [f for f in findings if f.code == "MB1012"]
    assert oom.remediation.command == (
        "kubectl -n prod patch deployment/payment --type merge -p '{\"spec\":{\"template\":{\"metadata\":"
        "{\"annotations\":{\"sidecar.istio.io/proxyCPU\":\"100m\",\"sidecar.istio.io/proxyMemory\":\"128Mi\","
        "\"sidecar.istio.io/proxyCPULimit\":\"2\",\"sidecar.istio.io/proxyMemoryLimit\":\"2048Mi\"}}}}}'")
    assert oom.remediation.action == "restart payment -n prod"
    assert "A restart alone keeps the 1.0 GiB limit and is OOMKilled again" in oom.remediation.summary


def test_oomkilled_sidecar_without_a_deployment_gets_advice_but_no_command():
    findings = status_findings(HEALTHY_ISTIOD + pod("job-1", "prod", restarts=4, last=OOM_KILLED))
    [oom] = [f for f in findings if f.code == "MB1012"]
    assert oom.remediation.command is None and oom.remediation.action is None
    assert "OOMKilled again" in oom.remediation.summary


def test_bypass_advice_says_what_leaving_the_mesh_breaks():
    findings = status_findings(HEALTHY_ISTIOD + pod("payment-7d9-x2", "prod", ready=False, restarts=25,
                                                    state=CRASH_LOOP, owner="payment-7d9"))
    [crash] = [f for f in findings if f.code == "MB1011"]
    summary = crash.remediation.summary
    assert "AuthorizationPolicies" in summary and "STRICT mTLS fail" in summary and "ISTIO_MUTUAL" in summary
    assert not summary.startswith("The sidecar is OOMKilled")


def test_bypass_advice_for_an_oomkilled_sidecar_says_raise_memory_first():
    findings = status_findings(HEALTHY_ISTIOD + pod("payment-7d9-x2", "prod", ready=False, restarts=25,
                                                    state=CRASH_LOOP, last=OOM_KILLED, owner="payment-7d9"))
    [crash] = [f for f in findings if f.code == "MB1011"]
    assert crash.remediation.summary.startswith("The sidecar is OOMKilled: raise its memory first")
    assert crash.remediation.action == "bypass payment -n prod"


def test_crash_looping_sidecar_is_an_error_with_restart_count_and_bypass_action():
    findings = status_findings(HEALTHY_ISTIOD + pod("payment-7d9-x2", "prod", ready=False, restarts=25,
                                                    state="{waiting: {reason: CrashLoopBackOff}}",
                                                    owner="payment-7d9"))
    [crash] = [f for f in findings if f.code == "MB1011"]
    assert crash.origin == "Pod prod/payment-7d9-x2"
    assert crash.evidence["restarts"] == 25
    assert crash.remediation.action == "bypass payment -n prod"
    # a crash loop is not also reported as "restarting" or "not ready"
    assert "MB1014" not in codes_of(findings) and "MB1013" not in codes_of(findings)


def test_restarts_below_threshold_are_quiet_and_at_threshold_warn():
    quiet = status_findings(HEALTHY_ISTIOD + pod("web-1", "prod", restarts=2))
    loud = status_findings(HEALTHY_ISTIOD + pod("web-1", "prod", restarts=3))
    assert "MB1014" not in codes_of(quiet)
    assert "MB1014" in codes_of(loud)


def test_not_ready_sidecar_is_a_warning():
    findings = status_findings(HEALTHY_ISTIOD + pod("web-1", "prod", ready=False))
    assert "MB1013" in codes_of(findings)


def test_gateway_pod_not_ready_is_a_control_plane_error_not_a_sidecar_warning():
    findings = status_findings(HEALTHY_ISTIOD + pod("gw-1", "istio-system", labels="{istio: ingressgateway}",
                                                    ready=False))
    assert "MB1001" in codes_of(findings)
    assert "MB1013" not in codes_of(findings)


def test_memory_near_limit_uses_pod_metrics():
    metrics = """
apiVersion: metrics.k8s.io/v1beta1
kind: PodMetrics
metadata: {name: istiod-1, namespace: istio-system}
containers: [{name: discovery, usage: {memory: 1900Mi}}]
"""
    findings = status_findings(pod("istiod-1", "istio-system", labels="{app: istiod}", container="discovery",
                                   limit="2Gi") + metrics)
    [near] = [f for f in findings if f.code == "MB1005"]
    assert "93%" in near.message


def test_memory_well_below_limit_is_quiet():
    metrics = """
apiVersion: metrics.k8s.io/v1beta1
kind: PodMetrics
metadata: {name: istiod-1, namespace: istio-system}
containers: [{name: discovery, usage: {memory: 500Mi}}]
"""
    findings = status_findings(pod("istiod-1", "istio-system", labels="{app: istiod}", container="discovery",
                                   limit="2Gi") + metrics)
    assert "MB1005" not in codes_of(findings)


def test_namespace_scope_hides_other_namespaces():
    findings = status_findings(HEALTHY_ISTIOD + pod("a-1", "prod", restarts=9) + pod("b-1", "dev", restarts=9),
                               namespace="dev")
    assert {f.origin for f in findings if f.code == "MB1014"} == {"Pod dev/b-1"}


def test_native_sidecar_in_init_containers_counts_as_sidecar():
    findings = status_findings(HEALTHY_ISTIOD + """
apiVersion: v1
kind: Pod
metadata: {name: n-1, namespace: prod}
spec:
  initContainers: [{name: istio-proxy, image: proxyv2:1.22.3, restartPolicy: Always}]
  containers: [{name: app, image: app:1}]
status:
  phase: Running
  initContainerStatuses: [{name: istio-proxy, ready: true, restartCount: 0,
                           state: {waiting: {reason: CrashLoopBackOff}}}]
""")
    assert "MB1011" in codes_of(findings)
