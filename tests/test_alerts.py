"""Parsing Alertmanager webhook payloads (captured from the real Alertmanager 0.25)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.incidents.alerts import AlertStatus, PayloadError, parse_notification

DATA = Path(__file__).parent / "data" / "alertmanager"


def payload(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_a_real_firing_notification_becomes_a_typed_group():
    notification = parse_notification((DATA / "firing.json").read_bytes())
    assert notification.group_key == '{}:{alertname="EnvoySidecarCrashLoop", namespace="prod"}'
    assert notification.status == AlertStatus.FIRING
    assert notification.severity == "critical"
    assert notification.namespaces == ["prod"]
    assert len(notification.firing()) == 2
    assert all(a.ends_at is None for a in notification.alerts)  # 0001-01-01 means "still firing"
    assert notification.title.startswith("EnvoySidecarCrashLoop")
    assert notification.labels_for_playbook["pod"] == "payment-7d9f8c6b5-q8r2n"


def test_a_real_resolved_notification_has_end_times():
    notification = parse_notification((DATA / "resolved.json").read_bytes())
    assert notification.status == AlertStatus.RESOLVED
    assert all(a.status == AlertStatus.RESOLVED and a.ends_at for a in notification.alerts)


def test_an_occurrence_is_fingerprint_and_start_time():
    notification = parse_notification((DATA / "firing.json").read_bytes())
    alert = notification.alerts[0]
    assert alert.occurrence == f"{alert.fingerprint}@{alert.starts_at.isoformat()}"


def test_the_playbook_follows_a_firing_alert_when_the_first_one_already_resolved():
    data = payload("firing.json")
    data["alerts"][0]["status"] = "resolved"
    notification = parse_notification(json.dumps(data).encode())
    assert notification.labels_for_playbook["pod"] == data["alerts"][1]["labels"]["pod"]


def test_truncated_alerts_are_counted():
    assert parse_notification((DATA / "truncated.json").read_bytes()).truncated_alerts == 1


@pytest.mark.parametrize("mutate, reason", [
    (lambda p: p.pop("groupKey"), "groupKey: required field is missing"),
    (lambda p: p.update(groupKey=""), "groupKey: must not be empty"),
    (lambda p: p.pop("alerts"), "alerts: required field is missing"),
    (lambda p: p.update(alerts=[]), "alerts: empty"),
    (lambda p: p.update(status="exploded"), "status: expected 'firing' or 'resolved'"),
    (lambda p: p.update(version="3"), "unsupported webhook version"),
    (lambda p: p["alerts"][0].pop("fingerprint"), "alerts[0].fingerprint: required field is missing"),
    (lambda p: p["alerts"][1]["labels"].pop("alertname"), "alerts[1].labels.alertname"),
    (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
    (lambda p: p["alerts"][0].update(labels={"alertname": 5}), "alerts[0].labels: expected an object of string"),
    (lambda p: p.update(commonLabels=["a"]), "commonLabels"),
    (lambda p: p.update(truncatedAlerts="x"), "truncatedAlerts: expected a non-negative integer"),
    (lambda p: p.update(truncatedAlerts=-1), "truncatedAlerts: expected a non-negative integer"),
    (lambda p: p["commonAnnotations"].update(summary="broken \ud800 text"), "half a UTF-16 surrogate pair"),
])
def test_a_payload_missing_or_mangling_a_required_field_is_refused_with_the_reason(mutate, reason):
    data = payload("firing.json")
    mutate(data)
    with pytest.raises(PayloadError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_notification(json.dumps(data).encode())


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "not JSON"),
    (b"[]", "JSON object"),
    (b"\xff\xfe", "not UTF-8"),
    ((DATA / "firing.json").read_text().encode("utf-16"), "not UTF-8"),  # valid JSON, but not what we can store
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_malformed_bodies_are_refused(body, reason):
    with pytest.raises(PayloadError, match=reason):
        parse_notification(body)
