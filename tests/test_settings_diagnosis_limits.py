"""MESHBOT_MAX_DIAGNOSES and MESHBOT_CLUSTER_REUSE_SECONDS: validated at start-up, and obeyed by the running bot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.cluster import ClusterAccess
from bot.server.wiring import build
from bot.settings import Settings, SettingsError
from tests.support.bot import bot_settings
from tests.support.diagnosis_gate import DiagnosisGate
from tests.support.kube import FakeKube, write_kubeconfig
from tests.support.slack import FakeSlack, post_signed, slash_command_body


def test_the_defaults_are_four_diagnoses_and_a_ten_second_reuse_window():
    settings = Settings.load({})
    assert settings.max_diagnoses == 4 and settings.cluster_reuse_seconds == 10.0


def test_both_settings_are_read_from_the_environment():
    settings = Settings.load({"MESHBOT_MAX_DIAGNOSES": "8", "MESHBOT_CLUSTER_REUSE_SECONDS": "2.5"})
    assert settings.max_diagnoses == 8 and settings.cluster_reuse_seconds == 2.5


def test_a_zero_reuse_window_is_allowed_and_means_only_reads_in_flight_are_shared():
    assert Settings.load({"MESHBOT_CLUSTER_REUSE_SECONDS": "0"}).cluster_reuse_seconds == 0.0


@pytest.mark.parametrize("name, value, complaint", [
    ("MESHBOT_MAX_DIAGNOSES", "0", "must be at least 1"),
    ("MESHBOT_MAX_DIAGNOSES", "four", "not a whole number"),
    ("MESHBOT_MAX_DIAGNOSES", "65", "must be at most 64"),
    ("MESHBOT_CLUSTER_REUSE_SECONDS", "-1", "must be 0 (share only reads in flight) or more"),
    ("MESHBOT_CLUSTER_REUSE_SECONDS", "301", "must be at most 300"),
    ("MESHBOT_CLUSTER_REUSE_SECONDS", "inf", "not a finite number"),
])
def test_a_bad_cap_or_window_stops_start_up_with_one_line_naming_it(name, value, complaint):
    with pytest.raises(SettingsError) as caught:
        Settings.load({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and complaint in message and "\n" not in message


def test_a_cap_of_one_queues_the_second_diagnosis_behind_the_first(fake_slack: FakeSlack, tmp_path: Path):
    gate = DiagnosisGate()
    meshbot = build(bot_settings(fake_slack, tmp_path, max_diagnoses=1), runner=gate).start()
    try:
        post_signed(f"{meshbot.url}/slack/events",
                    slash_command_body("status prod", response_url=fake_slack.response_url()))
        fake_slack.wait_for(lambda: len(gate.started) == 1, what="the first diagnosis running")
        post_signed(f"{meshbot.url}/slack/events",
                    slash_command_body("certs prod", response_url=fake_slack.response_url()))

        [top] = fake_slack.wait_for(
            lambda: [m for m in fake_slack.messages(top_level=True) if "certs" in m["text"]], what="Running…")
        [note] = fake_slack.wait_for(lambda: fake_slack.messages(thread_ts=top["_ts"]), what="the queued note")
        assert "Queued behind 1 diagnosis;" in note["text"]
        assert len(gate.started) == 1
    finally:
        gate.release.set()
        meshbot.stop(timeout=10)


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "prod"}}


def cluster_access(kube: FakeKube, tmp_path: Path, **overrides: Any) -> ClusterAccess:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    return ClusterAccess(Settings(slack_bot_token="xoxb-test", slack_signing_secret="s", kubeconfig=kubeconfig,
                                  kube_context="kmock", **overrides))


def pod_reads_for_two_diagnoses(kube: FakeKube, tmp_path: Path, reuse_seconds: float) -> int:
    """How many times the API server was asked for prod's pods when two diagnoses in a row read them."""
    kube.add(pod("a"))
    view = cluster_access(kube, tmp_path, cluster_reuse_seconds=reuse_seconds).view()
    try:
        view.read_list("Pod", "prod")
        view.read_list("Pod", "prod")
    finally:
        view.close()
    return kube.count("GET", "/api/v1/namespaces/prod/pods")


def test_the_reuse_window_lets_a_second_diagnosis_reuse_a_namespace_read(kube: FakeKube, tmp_path: Path):
    assert pod_reads_for_two_diagnoses(kube, tmp_path, reuse_seconds=60) == 1


def test_a_zero_reuse_window_reads_a_namespace_again_for_the_next_diagnosis(kube: FakeKube, tmp_path: Path):
    assert pod_reads_for_two_diagnoses(kube, tmp_path, reuse_seconds=0) == 2
