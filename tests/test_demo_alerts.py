"""The demo's alert menu: each alert is one the bundled playbooks handle, shaped as Alertmanager sends it."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bot.demo.alerts import CATALOGUE, webhook_body
from bot.incidents.alerts import AlertStatus, parse_notification
from bot.incidents.playbook_loader import DEFAULT_PLAYBOOKS_DIR, load_playbooks

STARTED = datetime(2026, 11, 24, 3, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("alert", CATALOGUE, ids=lambda a: a.name)
def test_every_demo_alert_has_its_own_playbook_not_the_fallback(alert):
    playbooks = load_playbooks(DEFAULT_PLAYBOOKS_DIR)
    chosen = playbooks.match({"alertname": alert.name, **alert.labels})
    assert chosen is not playbooks.fallback
    assert chosen.alertname == alert.name


def test_resolved_alert_is_the_same_occurrence_as_the_firing_one():
    alert = CATALOGUE[0]
    firing = parse_notification(webhook_body(alert, AlertStatus.FIRING, starts_at=STARTED))
    resolved = parse_notification(webhook_body(alert, AlertStatus.RESOLVED, starts_at=STARTED,
                                               now=datetime(2026, 11, 24, 3, 40, tzinfo=timezone.utc)))

    assert firing.status == AlertStatus.FIRING and resolved.status == AlertStatus.RESOLVED
    assert firing.group_key == resolved.group_key
    assert firing.alerts[0].occurrence == resolved.alerts[0].occurrence
    assert firing.alerts[0].ends_at is None and resolved.alerts[0].ends_at is not None


def test_error_rate_alert_points_the_playbook_at_the_service_namespace():
    alert = next(a for a in CATALOGUE if a.name == "ServiceMeshHighErrorRate")
    notification = parse_notification(webhook_body(alert, AlertStatus.FIRING, starts_at=STARTED))
    assert notification.namespaces == ["prod"] and notification.services == ["payment-service"]
