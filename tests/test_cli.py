"""The `meshbot` command line, run as a real subprocess: output formats and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CLEAN = """\
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: prod}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"""

BROKEN = CLEAN.replace("destination: {host: reviews}", "destination: {host: ratings}")


def meshbot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


@pytest.fixture
def config_file(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / "mesh.yaml"
        path.write_text(text)
        return str(path)
    return write


def test_analyze_clean_config_exits_zero_with_istioctl_message(config_file):
    result = meshbot("analyze", "-f", config_file(CLEAN))
    assert result.returncode == 0, result.stderr
    assert "No validation issues found" in result.stdout


def test_analyze_error_exits_79_and_prints_istioctl_style_line(config_file):
    path = config_file(BROKEN)
    result = meshbot("analyze", "-f", path)
    assert result.returncode == 79
    assert f'Error [IST0101] (VirtualService prod/reviews {path}:12) Referenced host not found: "ratings"' \
        in result.stdout


def test_analyze_json_is_an_istioctl_compatible_array(config_file):
    path = config_file(BROKEN)
    result = meshbot("analyze", "-f", path, "-o", "json")
    items = json.loads(result.stdout)
    [item] = [i for i in items if i["code"] == "IST0101"]
    assert set(item) == {"code", "documentationUrl", "level", "message", "origin", "reference"}
    assert item["documentationUrl"] == "https://istio.io/latest/docs/reference/config/analysis/ist0101/"
    assert item["reference"] == f"{path}:12"


def test_analyze_json_of_many_files_is_written_whole_before_the_process_ends(tmp_path):
    # `analyze -f` ends without freeing what it read (os._exit); output longer than a pipe's buffer must still arrive.
    for i in range(40):
        (tmp_path / f"vs-{i}.yaml").write_text("".join(
            f"---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{j}, namespace: ns-{i}}}\n"
            f"spec: {{hosts: [a], http: [{{route: [{{destination: {{host: missing-{j}}}}}]}}]}}\n" for j in range(25)))
    result = meshbot("analyze", "-f", str(tmp_path), "-o", "json")
    assert result.returncode == 79, result.stderr
    assert len(result.stdout) > 65536
    assert len([item for item in json.loads(result.stdout) if item["code"] == "IST0101"]) == 1000


def test_unparsable_input_exits_65_with_file_line_and_no_traceback(config_file):
    path = config_file("apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n")
    result = meshbot("analyze", "-f", path)
    assert result.returncode == 65
    assert result.stderr.startswith(f"meshbot: error: {path}:4: invalid YAML")
    assert "Traceback" not in result.stderr


def test_diagnose_json_has_every_finding_field(config_file):
    result = meshbot("diagnose", "all", "-f", config_file(BROKEN), "-o", "json")
    findings = json.loads(result.stdout)["findings"]
    assert findings, result.stderr
    for finding in findings:
        assert {"check", "code", "level", "message", "origin", "evidence"} <= set(finding)


def test_diagnose_unknown_check_is_a_usage_error():
    result = meshbot("diagnose", "everything", "-f", "examples/demo/cluster")
    assert result.returncode == 2
    assert "unknown check 'everything'" in result.stderr


def test_diagnose_bad_envoy_admin_option_is_a_usage_error():
    result = meshbot("diagnose", "envoy", "-f", "examples/demo/cluster", "--envoy-admin", "nonsense")
    assert result.returncode == 2 and "NAMESPACE/POD=URL" in result.stderr


def test_demo_reports_the_3am_outage_most_severe_first():
    result = meshbot("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = [line for line in out.splitlines() if line.startswith(("Error", "Warning", "Info"))]
    levels = [line.split(" ", 1)[0] for line in lines]
    assert levels == sorted(levels, key=["Error", "Warning", "Info"].index)
    for expected in ("OOMKilled", "CrashLoopBackOff (25 restarts)", "IST0109", "IST0101", "expired",
                     "does not contain the mesh root CA", "expires in 5 days"):
        assert expected in out, expected
    assert out.index("Summary:") < out.index("Error [")


def test_diagnose_reads_a_live_cluster_through_kubeconfig_and_context(kube, tmp_path):
    from tests.support.kube import write_kubeconfig

    kube.add({"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "web-1", "namespace": "prod"},
              "spec": {"containers": [{"name": "istio-proxy", "image": "proxyv2:1.22.3"}]},
              "status": {"phase": "Running", "containerStatuses": [
                  {"name": "istio-proxy", "ready": False, "restartCount": 40,
                   "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}})
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    result = meshbot("diagnose", "status", "--kubeconfig", config, "--context", "kmock", "-o", "json")
    codes = {f["code"] for f in json.loads(result.stdout)["findings"]}
    assert {"MB1011", "MB1006"} <= codes  # crash-looping sidecar, and no istiod at all
    assert result.returncode == 79


def test_diagnose_on_a_cluster_that_forbids_pods_names_the_permission(kube, tmp_path):
    from tests.support.kube import write_kubeconfig

    kube.fail("Pod", 403)
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    result = meshbot("diagnose", "status", "--kubeconfig", config, "--context", "kmock")
    assert result.returncode == 79
    assert "cannot list pods cluster-wide: forbidden (needs RBAC list on pods)" in result.stdout
    assert "Traceback" not in result.stderr
    assert "test-token-not-a-secret" not in result.stdout + result.stderr


def test_plan_shows_the_diff_and_dry_run_of_an_action_and_changes_nothing(kube, tmp_path):
    from tests.support.kube import write_kubeconfig

    kube.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments"}})
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    result = meshbot("plan", "--kubeconfig", config, "--context", "kmock", "permissive-mtls", "payments")
    assert result.returncode == 0, result.stderr
    assert "+    mode: PERMISSIVE" in result.stdout
    assert "server-side dry run: passed" in result.stdout
    assert kube.object("PeerAuthentication", "payments", "meshbot-emergency-permissive") is None


def test_plan_of_a_malformed_action_is_a_usage_error():
    result = meshbot("plan", "restart", "a", "b", "c")
    assert result.returncode == 2 and "usage" in result.stderr
