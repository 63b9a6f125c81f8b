"""Files-only analysis assumes Istio's default ingress gateway, like `istioctl analyze --use-kube=false`."""

import subprocess
import sys
from pathlib import Path

from commands.analyze import ANALYZE_KINDS, run_analyzers
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Snapshot
from commands.cluster.sources.files import FileSource
from tests.analyze.grid import DATA, analyze_istio_files

ROOT = Path(__file__).resolve().parents[2]


def codes_about(findings, origin):
    return sorted(f.code for f in findings if f.origin == origin)


def test_gateway_selecting_default_ingress_is_not_reported_missing_offline():
    # gateway-correct-port.yaml: a Gateway for `istio: ingressgateway` on port 80, nothing else.
    findings = analyze_istio_files("gateway-correct-port.yaml")
    assert codes_about(findings, "Gateway default/httpbin-gateway") == []


def test_port_missing_from_default_ingress_service_is_reported_offline():
    # gateway-no-port.yaml: port 8004 is not on the default Service (80, 443, 31400, 15443).
    findings = analyze_istio_files("gateway-no-port.yaml")
    assert codes_about(findings, "Gateway default/httpbin-gateway") == ["IST0162"]


def test_missing_credential_behind_default_ingress_is_reported_offline():
    findings = analyze_istio_files("gateway-secrets.yaml", analyzers=("gateway.SecretAnalyzer",))
    messages = [f.message for f in findings if f.origin == "Gateway default/defaultgateway-bogusCredentialName"]
    assert messages == ['Referenced credentialName not found: "httpbin-credential-bogus"']


def test_live_snapshot_gets_no_default_gateway():
    # The same objects from a live cluster (a plain Snapshot): no ingress pod exists, so say so.
    resources = FileSource([DATA / "gateway-correct-port.yaml"]).resources
    findings = run_analyzers(CheckContext(snapshot=Snapshot(resources)))
    assert codes_about(findings, "Gateway default/httpbin-gateway") == ["IST0101"]


def test_ingress_controller_mode_off_adds_no_default_gateway(tmp_path):
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("ingressControllerMode: \"OFF\"\n")
    source = FileSource([DATA / "gateway-correct-port.yaml"], mesh_config=mesh)
    findings = run_analyzers(CheckContext(snapshot=source.snapshot(ANALYZE_KINDS)))
    assert codes_about(findings, "Gateway default/httpbin-gateway") == ["IST0101"]


def test_ingress_service_from_files_wins_over_the_default(tmp_path):
    own = tmp_path / "ingress.yaml"
    own.write_text("""
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports: [{name: https, port: 443, targetPort: 8443}]
""")
    source = FileSource([DATA / "gateway-correct-port.yaml", own])
    findings = run_analyzers(CheckContext(snapshot=source.snapshot(ANALYZE_KINDS)))
    # Port 80 is on the default Service only; the file's Service replaced it.
    assert codes_about(findings, "Gateway default/httpbin-gateway") == ["IST0162"]


def test_default_gateway_objects_are_not_in_the_snapshot_other_checks_read():
    snapshot = FileSource([DATA / "gateway-correct-port.yaml"]).snapshot(ANALYZE_KINDS)
    assert [r.origin for r in snapshot.assumed] == ["Pod istio-system/istio-ingressgateway-dummypod",
                                                    "Service istio-system/istio-ingressgateway"]
    assert snapshot.of_kind("Pod") == [] and snapshot.of_kind("Service") == []


def test_cli_analyze_of_files_uses_the_default_gateway():
    result = subprocess.run([sys.executable, "-m", "bot.cli", "analyze", "-f", str(DATA / "gateway-no-port.yaml")],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "IST0162" in result.stdout and "IST0101" not in result.stdout, result.stdout + result.stderr


def test_files_holding_their_own_ingress_gateway_get_no_default_to_hide_a_missing_port(tmp_path):
    own = tmp_path / "ingress.yaml"
    own.write_text("""
apiVersion: v1
kind: Pod
metadata: {name: ingress-7d9, namespace: istio-system, labels: {istio: ingressgateway}}
spec: {containers: [{name: istio-proxy, image: proxyv2}]}
---
apiVersion: v1
kind: Service
metadata: {name: public-ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports: [{name: https, port: 443}]
""")
    source = FileSource([DATA / "gateway-correct-port.yaml", own])
    findings = run_analyzers(CheckContext(snapshot=source.snapshot(ANALYZE_KINDS)))
    # The default Service would have offered port 80 and hidden this.
    assert codes_about(findings, "Gateway default/httpbin-gateway") == ["IST0162"]
