"""``meshbot timeline``: on the bundled demo's captures, and on a live cluster (emulator) with a real Prometheus."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.cli import parse_duration
from commands.times import rfc3339
from tests.support.kube import write_kubeconfig
from tests.support.prometheus import ALERT_AT

ROOT = Path(__file__).resolve().parent.parent


def meshbot(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBOT_PROMETHEUS")}
    return subprocess.run([sys.executable, "-m", "bot.cli", "timeline", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env=env)


def test_demo_timeline_shows_the_onset_and_the_change_just_before_it():
    result = meshbot("--demo")

    assert result.returncode == 0, result.stderr
    assert "Onset: 2026-11-24T02:41:00Z (26 minutes before 2026-11-24T03:07:00Z), first on api-service.prod -> " \
           "payment-service.prod" in result.stdout
    assert ("Last change before it: VirtualService prod/payment-routes applied by argocd-controller, 2 minutes "
            "before the onset") in result.stdout
    assert "503 ×13100 (flags UF URX)" in result.stdout
    assert "BackOff on Pod prod/payment-service-7d9f8c6b5-x2x4k x25" in result.stdout


def test_demo_timeline_as_json_carries_edges_changes_events_and_findings():
    result = meshbot("--demo", "-o", "json")

    timeline = json.loads(result.stdout)
    assert timeline["onset"] == "2026-11-24T02:41:00Z"
    assert [e["destination"] for e in timeline["edges"]] == ["payment-service.prod", "api-service.prod"]
    assert "VirtualService prod/payment-routes" in [c["object"] for c in timeline["changes"]]
    assert {"MB6010", "MB6020", "MB6023", "MB6030"} <= {f["code"] for f in timeline["findings"]}


def _seed_outage(kube) -> None:
    kube.add({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {
        "name": "deny-all", "namespace": "shop", "creationTimestamp": rfc3339(ALERT_AT - timedelta(days=3)),
        "managedFields": [{"manager": "argocd-controller", "operation": "Apply", "apiVersion": "security.istio.io/v1",
                           "time": rfc3339(ALERT_AT - timedelta(minutes=12)), "fieldsType": "FieldsV1",
                           "fieldsV1": {"f:spec": {}}}]}, "spec": {}})


def test_live_timeline_reads_prometheus_and_the_cluster(kube, tmp_path, mesh_prometheus):
    _seed_outage(kube)
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)

    result = meshbot("-n", "shop", "--at", rfc3339(ALERT_AT), "--prometheus-url", mesh_prometheus.url,
                     "--kubeconfig", config, "--context", "kmock", "-o", "json")

    assert result.returncode == 0, result.stderr
    timeline = json.loads(result.stdout)
    assert timeline["onset"] == "2026-12-01T09:50:00Z"
    assert [(e["source"], e["destination"]) for e in timeline["edges"]] == [("frontend.shop", "payments.shop")]
    assert [(c["object"], c["what"], c["manager"]) for c in timeline["changes"]] == [
        ("AuthorizationPolicy shop/deny-all", "applied", "argocd-controller")]


def test_live_timeline_without_prometheus_says_what_it_could_not_see(kube, tmp_path):
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)

    result = meshbot("--kubeconfig", config, "--context", "kmock")

    assert result.returncode == 0, result.stderr
    assert "MB6001  No Prometheus configured (MESHBOT_PROMETHEUS_URL)" in result.stdout


@pytest.mark.parametrize("text", ["30", "m", "0m", "5x", "-5m"])
def test_since_must_be_a_positive_duration_with_a_unit(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_since_accepts_seconds_minutes_hours_and_days():
    assert [parse_duration(t) for t in ("90s", "30m", "2h", "1d")] == [
        timedelta(seconds=90), timedelta(minutes=30), timedelta(hours=2), timedelta(days=1)]


def test_png_option_writes_the_error_ratio_graph(tmp_path):
    picture = tmp_path / "timeline.png"

    result = meshbot("--demo", "--png", str(picture))

    assert result.returncode == 0, result.stderr
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
