"""Configuration that fails requests by design: fault injection left on, and DestinationRule TLS modes that
contradict the destination (the ``traffic-policy`` check, docs/outage-classes.md rows 7 and 17).

The VirtualServices are Istio's own Bookinfo samples (samples/bookinfo/networking/
virtual-service-ratings-test-abort.yaml and -test-delay.yaml); the PeerAuthentication and DestinationRule shapes
are those of istio.io's mutual TLS migration task and its "503 errors after setting destination rule" page.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from commands.catalog import default_checks
from commands.checks.registry import CheckContext
from commands.checks.traffic import traffic_policy
from commands.clients.http import http_endpoint
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import Snapshot
from commands.cluster.sources.files import FileSource
from commands.findings import Finding, Level
from commands.resources.references import PodRef
from commands.triage import triage
from tests.support import sidecar
from tests.support.analysis import snapshot_from_yaml
from tests.support.certs import mint
from tests.support.envoy import RunningEnvoy
from tests.support.envoy_cases import Lab, port_of, send
from tests.support.injected import injected_pod

ROOT = Path(__file__).resolve().parent.parent

RATINGS_TEST_ABORT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      abort:
        percentage:
          value: 100.0
        httpStatus: 500
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
"""

RATINGS_TEST_DELAY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 7s
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
"""

ABORT_FOR_EVERYONE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  http:
  - name: all
    fault:
      abort:
        percentage: {value: 100}
        httpStatus: 503
    route:
    - destination: {host: ratings}
"""


def run(snapshot: Snapshot, namespace: str | None = None) -> list[Finding]:
    return traffic_policy(CheckContext(snapshot=snapshot, namespace=namespace))


def codes_of(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


# -- fault injection (FI / DI) -----------------------------------------------------------------------------------

def test_an_abort_on_every_request_is_an_error_naming_route_status_and_flag():
    [finding] = run(snapshot_from_yaml(ABORT_FOR_EVERYONE))

    assert finding.code == "MB5001" and finding.level is Level.ERROR
    assert "VirtualService bookinfo/ratings aborts 100% of every request to ratings with HTTP 503" in finding.message
    assert "route all" in finding.message and "FI" in finding.message
    assert finding.remediation and finding.remediation.command == "kubectl -n bookinfo get virtualservice ratings -o yaml"


def test_istios_test_abort_sample_is_a_warning_for_the_matching_callers_only():
    [finding] = run(snapshot_from_yaml(RATINGS_TEST_ABORT))

    assert finding.code == "MB5002" and finding.level is Level.WARNING
    assert "matching headers end-user with HTTP 500" in finding.message and "route http[0]" in finding.message


def test_istios_test_delay_sample_is_a_warning_with_its_delay():
    [finding] = run(snapshot_from_yaml(RATINGS_TEST_DELAY))

    assert finding.code == "MB5003"
    assert "delays 100% of requests to ratings matching headers end-user by 7s" in finding.message
    assert "DI" in finding.message


def test_a_fault_without_a_percentage_injects_nothing_and_stays_quiet():
    # TranslateFault sets Envoy's percentage only from percentage.value; unset means no request is aborted.
    quiet = ABORT_FOR_EVERYONE.replace("percentage: {value: 100}", "percentage: {value: 0}")
    missing = ABORT_FOR_EVERYONE.replace("        percentage: {value: 100}\n", "")

    assert run(snapshot_from_yaml(quiet)) == []
    assert run(snapshot_from_yaml(missing)) == []


def test_a_route_without_fault_stays_quiet():
    plain = RATINGS_TEST_ABORT.split("  - match:")[0] + "  - route:\n    - destination:\n        host: ratings\n"
    assert run(snapshot_from_yaml(plain)) == []


def test_fault_remediation_never_restarts_or_relaxes_anything():
    for text in (ABORT_FOR_EVERYONE, RATINGS_TEST_DELAY):
        [finding] = run(snapshot_from_yaml(text))
        advice = f"{finding.remediation.summary} {finding.remediation.command}".lower()
        assert "restart" not in advice and "delete" not in advice and "permissive" not in advice


# -- DestinationRule tls modes against the destination -------------------------------------------------------------

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {app: httpbin}
  ports:
  - {name: http, port: 8000, targetPort: 80}
"""

STRICT_NAMESPACE = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec:
  mtls: {mode: STRICT}
"""

STRICT_MESH = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"""

PLAINTEXT_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin-plaintext, namespace: foo}
spec:
  host: httpbin.foo.svc.cluster.local
  trafficPolicy:
    tls: {mode: DISABLE}
"""

MUTUAL_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin-mtls, namespace: bar}
spec:
  host: httpbin.foo.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
"""


def httpbin_pod(name: str = "httpbin-7d9f8c6b5-abcde", *, sidecar: bool = True) -> str:
    pod = injected_pod(name, "foo", {"app": "httpbin", "version": "v1"})
    pod["spec"]["containers"].insert(0, {"name": "httpbin", "image": "docker.io/kong/httpbin:0.1.0",
                                         "ports": [{"containerPort": 80, "name": "http"}]})
    if not sidecar:
        pod["spec"]["containers"] = [c for c in pod["spec"]["containers"] if c["name"] != "istio-proxy"]
    return json.dumps(pod)


def docs(*parts: str) -> str:
    return "\n---\n".join(part.strip() for part in parts)


def test_plaintext_to_a_namespace_under_strict_mtls_is_an_error_naming_both_resources():
    [finding] = run(snapshot_from_yaml(docs(SERVICE, httpbin_pod(), STRICT_NAMESPACE, PLAINTEXT_RULE)))

    assert finding.code == "MB5010" and finding.level is Level.ERROR
    assert finding.origin == "DestinationRule foo/httpbin-plaintext"
    assert "httpbin.foo port 8000" in finding.message
    assert "STRICT from PeerAuthentication foo/default" in finding.message
    assert "permissive" not in finding.remediation.summary.lower().replace("do not relax", "")


def test_mesh_wide_strict_in_the_root_namespace_counts_too():
    [finding] = run(snapshot_from_yaml(docs(SERVICE, httpbin_pod(), STRICT_MESH, PLAINTEXT_RULE)))
    assert "STRICT from PeerAuthentication istio-system/default" in finding.message


def test_plaintext_to_permissive_pods_is_how_migration_works_and_stays_quiet():
    permissive = STRICT_NAMESPACE.replace("STRICT", "PERMISSIVE")
    assert run(snapshot_from_yaml(docs(SERVICE, httpbin_pod(), permissive, PLAINTEXT_RULE))) == []
    # No PeerAuthentication at all: Istio's default is PERMISSIVE.
    assert run(snapshot_from_yaml(docs(SERVICE, httpbin_pod(), PLAINTEXT_RULE))) == []


def test_a_workload_port_exception_to_namespace_strict_is_honoured_on_the_target_port():
    exception = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  mtls: {mode: UNSET}
  portLevelMtls:
    80: {mode: PERMISSIVE}
"""
    assert run(snapshot_from_yaml(docs(SERVICE, httpbin_pod(), STRICT_NAMESPACE, exception, PLAINTEXT_RULE))) == []
    # The same exception on another port leaves port 80 STRICT (inherited through UNSET).
    other_port = exception.replace("80: {mode: PERMISSIVE}", "9090: {mode: PERMISSIVE}")
    assert codes_of(run(snapshot_from_yaml(docs(SERVICE, httpbin_pod(), STRICT_NAMESPACE, other_port,
                                                PLAINTEXT_RULE)))) == ["MB5010"]


def test_a_subset_that_disables_tls_is_judged_against_its_own_pods():
    subset_rule = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: foo}
spec:
  host: httpbin
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tls: {mode: DISABLE}
  - name: v2
    labels: {version: v2}
"""
    [finding] = run(snapshot_from_yaml(docs(SERVICE, httpbin_pod(), STRICT_NAMESPACE, subset_rule)))
    assert "httpbin.foo subset v1 port 8000" in finding.message


def test_istio_mutual_to_pods_without_a_sidecar_is_an_error():
    [finding] = run(snapshot_from_yaml(docs(SERVICE, httpbin_pod(sidecar=False), MUTUAL_RULE)))

    assert finding.code == "MB5011" and finding.level is Level.ERROR
    assert "none of its pods (httpbin-7d9f8c6b5-abcde) has a sidecar" in finding.message


def test_istio_mutual_to_pods_with_a_sidecar_stays_quiet():
    assert run(snapshot_from_yaml(docs(SERVICE, httpbin_pod(), STRICT_NAMESPACE, MUTUAL_RULE))) == []


def test_a_rule_for_another_host_is_not_applied_to_this_service():
    other = PLAINTEXT_RULE.replace("httpbin.foo.svc.cluster.local", "reviews.foo.svc.cluster.local")
    assert run(snapshot_from_yaml(docs(SERVICE, httpbin_pod(), STRICT_NAMESPACE, other))) == []


# -- registered like every check: the CLI reports it and exits istioctl-style ---------------------------------

def test_the_check_is_in_the_catalogue_and_reads_only_what_it_needs():
    checks = default_checks()
    assert "traffic-policy" in checks.names()
    assert checks.kinds_for(["traffic-policy"]) == {"VirtualService", "DestinationRule", "PeerAuthentication",
                                                     "Service", "Pod"}


def test_a_diagnosis_of_files_finds_the_conflict_and_exits_79(tmp_path: Path):
    (tmp_path / "mesh.yaml").write_text(docs(SERVICE, httpbin_pod(), STRICT_NAMESPACE, PLAINTEXT_RULE,
                                             ABORT_FOR_EVERYONE))
    findings = default_checks().diagnose(["traffic-policy"], FileSource([tmp_path]))
    assert codes_of(findings) == ["MB5001", "MB5010"]

    result = subprocess.run([sys.executable, "-m", "bot.cli", "diagnose", "traffic-policy", "-f", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 79, result.stderr
    assert "Error [MB5010]" in result.stdout and "Error [MB5001]" in result.stdout
    assert "No problems found" not in result.stdout


# -- triage: the DestinationRule is the cause of what the caller's real Envoy shows ---------------------------

PAYMENT = """
apiVersion: v1
kind: Service
metadata: {name: payment, namespace: prod}
spec:
  selector: {app: payment}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: payment-7d9f8c6b5-m5p7r, namespace: prod, labels: {app: payment}}
spec:
  containers: [{name: payment, image: "payment:1", ports: [{containerPort: 8080}]}]
status: {phase: Running}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment, namespace: prod}
spec:
  host: payment.prod.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"""
CALLER = PodRef("prod", "checkout-6b7c9d8f5-k2m4p")


def test_istio_mutual_to_a_sidecarless_service_explains_the_callers_captured_tls_failures(tmp_path: Path):
    # The caller's side is the real Envoy 1.40 capture of a sidecar whose mTLS peer speaks no TLS
    # (tests/data/envoy-tls-plaintext-peer, MB4015 plaintext-peer); the cause is only in the objects.
    (tmp_path / "mesh.yaml").write_text(PAYMENT)
    endpoints = EndpointResolver(http=http_endpoint,
                                 envoy_admin_urls={CALLER: str(ROOT / "tests/data/envoy-tls-plaintext-peer")})
    findings = default_checks().diagnose(["envoy", "traffic-policy"], FileSource([tmp_path]), endpoints=endpoints)

    top = triage(findings).top
    assert top is not None and top.finding.code == "MB5011"
    assert {"MB4015", "MB4002"} <= {f.code for f in top.explains}


def test_plaintext_to_strict_explains_the_callers_failures_to_that_service_only():
    snapshot = snapshot_from_yaml(docs(SERVICE, httpbin_pod(), STRICT_NAMESPACE, PLAINTEXT_RULE))
    [conflict] = run(snapshot)
    caller = Finding(check="envoy", code="MB4018", level=Level.ERROR, message="reset", origin="Pod bar/sleep-1",
                     evidence={"cluster": "outbound|8000||httpbin.foo.svc.cluster.local"})
    elsewhere = Finding(check="envoy", code="MB4018", level=Level.ERROR, message="reset", origin="Pod bar/sleep-1",
                        evidence={"cluster": "outbound|9080||reviews.foo.svc.cluster.local"})

    cause = triage([conflict, caller, elsewhere]).cause_of(caller)
    assert cause is not None and cause.finding is conflict
    assert triage([conflict, caller, elsewhere]).cause_of(elsewhere).finding is not conflict


# -- the same outage in the real Envoy: the sidecar answers itself, so only the objects name it ----------------

_FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def faulted_sidecar(lab: Lab, share_per_million: int) -> RunningEnvoy:
    """An outbound listener as istiod builds it with a VirtualService fault: the fault filter before the router in
    the connection manager (pilot/pkg/networking/core/listener_builder.go, xdsfilters.Fault) and the route's own
    HTTPFault from TranslateFault (route.go): abort 503 with percentage.value as a per-million fraction."""
    listener = sidecar.outbound_listener([sidecar.service_vhost(dict(sidecar.route(), typed_per_filter_config={
        "envoy.filters.http.fault": {"@type": _FAULT, "abort": {"http_status": 503, "percentage": {
            "numerator": share_per_million, "denominator": "MILLION"}}}}))])
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"] = [{"name": "envoy.filters.http.fault", "typed_config": {"@type": _FAULT}},
                               *manager["http_filters"]]
    return lab.start([listener], [sidecar.outbound_cluster(lab.upstream())])


def test_a_real_sidecar_aborting_every_request_shows_no_failure_to_the_envoy_check(envoy_binary: str, tmp_path: Path):
    lab = Lab(binary=envoy_binary, workdir=tmp_path, istio_defaults_only=True)
    try:
        proxy = faulted_sidecar(lab, 1_000_000)
        assert set(send(proxy, 10)) == {503}, "the fault filter answers every request itself"
        resolver = EndpointResolver(http=http_endpoint, envoy_admin_urls={CALLER: proxy.admin_url})
        seen = default_checks().run("envoy", CheckContext(snapshot=Snapshot(), endpoints=resolver))
    finally:
        lab.close()
    # No request reached the upstream and Istio's default stats matcher hides the listener's counters: the envoy
    # check can only say it saw no traffic (MB4026), never an error.
    assert "MB4026" in codes_of(seen) and all(f.level is not Level.ERROR for f in seen)
    # The VirtualService that produced the route is the evidence, and it is an Error.
    assert codes_of(run(snapshot_from_yaml(ABORT_FOR_EVERYONE))) == ["MB5001"]


def test_a_real_sidecar_with_a_zero_percent_fault_serves_every_request(envoy_binary: str, tmp_path: Path):
    lab = Lab(binary=envoy_binary, workdir=tmp_path, istio_defaults_only=True)
    try:
        assert set(send(faulted_sidecar(lab, 0), 10)) == {200}
    finally:
        lab.close()
    assert run(snapshot_from_yaml(ABORT_FOR_EVERYONE.replace("{value: 100}", "{value: 0}"))) == []


# -- plaintext to STRICT on two real Envoys: the caller's failures, the DestinationRule as their cause ---------

_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


def strict_server(lab: Lab) -> int:
    """The destination's sidecar under STRICT PeerAuthentication: its inbound listener inspects the transport and has
    filter chains for TLS only (pilot/pkg/networking/core/listener_builder.go, mtls STRICT builds no plaintext chain),
    so a plaintext connection matches no chain and Envoy closes it."""
    root = mint("mesh-root", is_ca=True)
    leaf = mint("payment", issuer=root, uris=(sidecar.SPIFFE.format("payment"),))
    for name, text in (("cert.pem", leaf.cert_pem), ("key.pem", leaf.key_pem)):
        (lab.workdir / name).write_text(text)
    inbound = sidecar.inbound_listener()
    inbound["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]
    chain = inbound["filter_chains"][0]
    chain["filter_chain_match"] = {"transport_protocol": "tls"}
    chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": _TLS + "DownstreamTlsContext", "common_tls_context": {"tls_certificates": [{
            "certificate_chain": {"filename": str(lab.workdir / "cert.pem")},
            "private_key": {"filename": str(lab.workdir / "key.pem")}}]}}}
    server = lab.start([inbound], [sidecar.inbound_cluster(lab.upstream())])
    return port_of(server, f"0.0.0.0_{sidecar.INBOUND_PORT}")


STRICT_PAYMENT = f"""
apiVersion: v1
kind: Service
metadata: {{name: payment, namespace: prod}}
spec:
  selector: {{app: payment}}
  ports: [{{name: http, port: 8080, targetPort: 8080}}]
---
{json.dumps(injected_pod("payment-7d9f8c6b5-m5p7r", "prod", {"app": "payment"}))}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: prod}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: payment, namespace: prod}}
spec:
  host: payment
  trafficPolicy: {{tls: {{mode: DISABLE}}}}
"""


def test_plaintext_to_a_real_strict_sidecar_fails_every_call_and_the_rule_is_the_top_cause(envoy_binary: str,
                                                                                          tmp_path: Path):
    lab = Lab(binary=envoy_binary, workdir=tmp_path)
    try:
        # The caller's cluster as istiod builds it under tls DISABLE: no transport socket.
        caller = lab.start([sidecar.outbound_listener([sidecar.service_vhost()])],
                           [sidecar.outbound_cluster(strict_server(lab))])
        assert set(send(caller, 10)) == {503}
        resolver = EndpointResolver(http=http_endpoint, envoy_admin_urls={CALLER: caller.admin_url})
        seen = default_checks().run("envoy", CheckContext(snapshot=Snapshot(), endpoints=resolver))
    finally:
        lab.close()
    failures = [f for f in seen if f.level is Level.ERROR]
    assert failures, "the caller's sidecar shows the failed calls"

    conflict = run(snapshot_from_yaml(STRICT_PAYMENT))
    assert codes_of(conflict) == ["MB5010"]
    top = triage([*conflict, *seen]).top
    assert top is not None and top.finding.code == "MB5010"
    assert {f.code for f in failures} <= {f.code for f in top.explains}
