"""The real Alertmanager fixture: what Alertmanager 0.25 delivers to a webhook receiver, and when.

These pin down the contract the bot's ``/alertmanager`` endpoint relies on —
one delivery per group, a bearer token, version-4 payloads, resolved
notifications, retries on 5xx — and keep ``tests/data/alertmanager`` honest.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.data.alertmanager import capture
from tests.data.alertmanager.capture import (
    CIRCUIT_OPEN,
    CIRCUIT_OPEN_GROUP,
    CRASHLOOP_GROUP,
    CRASHLOOP_Q8R2N,
    CRASHLOOP_X2X4K,
    of_group,
)
from tests.support.alertmanager import (
    WEBHOOK_PATH,
    RunningAlertmanager,
    WebhookDeliveries,
    alert,
    resolved,
    start_alertmanager,
)
from tests.support.http_server import ProgrammableServer, start_server

pytestmark = pytest.mark.alertmanager

TOKEN = "s3cret-webhook-token"
GROUP_WAIT, GROUP_INTERVAL = 1.0, 2.0  # the fixture's defaults, in seconds
PAYLOAD_FIELDS = {"version", "groupKey", "status", "receiver", "groupLabels", "commonLabels", "commonAnnotations",
                  "externalURL", "alerts", "truncatedAlerts"}
ALERT_FIELDS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}


@pytest.fixture
def receiver() -> Iterator[ProgrammableServer]:
    receiver, server = start_server()
    receiver.answer(WEBHOOK_PATH, "ok")
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def deliveries(receiver: ProgrammableServer) -> WebhookDeliveries:
    return WebhookDeliveries(receiver)


@pytest.fixture
def alertmanager(alertmanager_factory: Callable[..., RunningAlertmanager],
                 receiver: ProgrammableServer) -> RunningAlertmanager:
    return alertmanager_factory(receiver.url + WEBHOOK_PATH, bearer_token=TOKEN)


def starting_now(*alerts: dict[str, Any]) -> list[dict[str, Any]]:
    """The alerts as if they had just started, so Alertmanager holds each new group for group_wait.

    The captured alerts started in 2024: a group of those is flushed the moment its
    first alert arrives, racing the insertion of the second one from the same push.
    """
    now = datetime.now(timezone.utc).isoformat()
    return [{**item, "startsAt": now} for item in alerts]


def test_each_group_is_delivered_once_with_the_bearer_token(alertmanager: RunningAlertmanager,
                                                            deliveries: WebhookDeliveries) -> None:
    alertmanager.push(*starting_now(CRASHLOOP_X2X4K, CRASHLOOP_Q8R2N, CIRCUIT_OPEN))

    deliveries.wait_for(lambda ds: len(ds) >= 2, alertmanager=alertmanager)
    time.sleep(GROUP_INTERVAL + 0.5)  # a third would come at the next flush at the latest

    received = deliveries()
    assert sorted(d.payload["groupKey"] for d in received) == sorted([CRASHLOOP_GROUP, CIRCUIT_OPEN_GROUP])
    assert {d.authorization for d in received} == {f"Bearer {TOKEN}"}
    assert len(of_group(received, CRASHLOOP_GROUP)[0]["alerts"]) == 2


def test_a_new_alert_waits_group_wait_but_one_that_started_earlier_is_sent_at_once(
        alertmanager: RunningAlertmanager, deliveries: WebhookDeliveries) -> None:
    pushing = time.monotonic()
    alertmanager.push(alert("EnvoySidecarCrashLoop", labels={"namespace": "staging"}),  # starts now
                      CIRCUIT_OPEN)  # started in 2024, longer ago than group_wait
    pushed = time.monotonic()

    received = deliveries.wait_for(lambda ds: len(ds) >= 2, alertmanager=alertmanager)

    at = {d.payload["groupLabels"]["alertname"]: d.received_at for d in received}
    # The old group is flushed while the push is being answered: measured from the push's *answer*, so a
    # slow push on a loaded machine (CI once took 0.6 s to answer it) does not count as waiting.
    assert at["EnvoyUpstreamCircuitOpen"] - pushed < GROUP_WAIT / 2
    # The new group's group_wait starts when Alertmanager takes the alert, which is after ``pushing``.
    assert at["EnvoySidecarCrashLoop"] - pushing >= GROUP_WAIT - 0.05


def test_a_delivery_is_a_version_4_payload(alertmanager: RunningAlertmanager, deliveries: WebhookDeliveries) -> None:
    alertmanager.push(*starting_now(CRASHLOOP_X2X4K, CRASHLOOP_Q8R2N))

    payload = deliveries.wait_for(lambda ds: len(ds) >= 1, alertmanager=alertmanager)[0].payload

    assert set(payload) == PAYLOAD_FIELDS
    assert (payload["version"], payload["status"], payload["receiver"]) == ("4", "firing", "meshbot")
    assert payload["groupKey"] == '{}:{alertname="EnvoySidecarCrashLoop", namespace="prod"}'
    assert payload["groupLabels"] == {"alertname": "EnvoySidecarCrashLoop", "namespace": "prod"}
    assert payload["truncatedAlerts"] == 0
    # Without --web.external-url, Alertmanager names itself by host name and port.
    assert payload["externalURL"].endswith(":" + alertmanager.url.rsplit(":", 1)[1])
    for item in payload["alerts"]:
        assert set(item) == ALERT_FIELDS
        assert item["status"] == "firing"
        assert item["endsAt"] == "0001-01-01T00:00:00Z"  # firing alerts never expose their end
        assert re.fullmatch(r"[0-9a-f]{16}", item["fingerprint"])


def test_resolving_a_group_delivers_it_resolved_and_leaves_the_other_alone(
        alertmanager: RunningAlertmanager, deliveries: WebhookDeliveries) -> None:
    crash_x, crash_q, circuit_open = starting_now(CRASHLOOP_X2X4K, CRASHLOOP_Q8R2N, CIRCUIT_OPEN)
    alertmanager.push(crash_x, crash_q, circuit_open)
    deliveries.wait_for(lambda ds: len(ds) >= 2, alertmanager=alertmanager)

    ended = datetime.now(timezone.utc)  # after group_wait, so never before the alerts started
    alertmanager.push(resolved(crash_x, ended), resolved(crash_q, ended))

    received = deliveries.wait_for(lambda ds: len(of_group(ds, CRASHLOOP_GROUP)) >= 2, alertmanager=alertmanager)
    resolution = of_group(received, CRASHLOOP_GROUP)[1]
    assert resolution["status"] == "resolved"
    assert [a["status"] for a in resolution["alerts"]] == ["resolved", "resolved"]
    assert all(datetime.fromisoformat(a["endsAt"]) < datetime.now(timezone.utc) for a in resolution["alerts"])
    assert len(of_group(received, CIRCUIT_OPEN_GROUP)) == 1


def test_a_receiver_answering_500_gets_the_same_group_again(alertmanager: RunningAlertmanager,
                                                            receiver: ProgrammableServer,
                                                            deliveries: WebhookDeliveries) -> None:
    receiver.answer(WEBHOOK_PATH, "database is locked", status=500)
    alertmanager.push(CRASHLOOP_X2X4K)

    failed = deliveries.wait_for(lambda ds: len(ds) >= 2, alertmanager=alertmanager)
    receiver.answer(WEBHOOK_PATH, "ok")
    received = deliveries.wait_for(lambda ds: len(ds) > len(failed), alertmanager=alertmanager)

    assert {d.payload["groupKey"] for d in received} == {CRASHLOOP_GROUP}
    # A retry within one flush (exponential back-off from ~0.5 s), not the next group_interval.
    assert failed[1].received_at - failed[0].received_at < GROUP_INTERVAL
    assert alertmanager.wait_for_log(r'msg="Notify success" attempts=([2-9]|\d\d)')


def test_amtool_adds_an_alert_that_alertmanager_delivers(alertmanager: RunningAlertmanager,
                                                         deliveries: WebhookDeliveries) -> None:
    alertmanager.amtool("alert", "add", "EnvoySidecarCrashLoop", "namespace=prod", "pod=payment-7d9f8c6b5-x2x4k",
                        "--annotation=summary=istio-proxy is crash-looping")

    payload = deliveries.wait_for(lambda ds: len(ds) >= 1, alertmanager=alertmanager)[0].payload
    assert payload["commonLabels"] == {"alertname": "EnvoySidecarCrashLoop", "namespace": "prod",
                                       "pod": "payment-7d9f8c6b5-x2x4k"}
    assert payload["commonAnnotations"] == {"summary": "istio-proxy is crash-looping"}


def test_amtool_accepts_the_generated_config(alertmanager: RunningAlertmanager) -> None:
    result = alertmanager.amtool("check-config", str(alertmanager.config_path))

    assert "SUCCESS" in result.stdout
    assert "1 receivers" in result.stdout


def test_a_missing_alertmanager_fails_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(pytest.fail.Exception, match="apt-get install -y prometheus-alertmanager"):
        start_alertmanager("http://127.0.0.1:9/alertmanager", bearer_token=TOKEN, tmp_path=tmp_path)


def test_saved_samples_are_what_alertmanager_sends_today() -> None:
    samples = capture.capture_all()

    for name, payload in samples.items():
        saved = (capture.HERE / name).read_text()
        assert saved == capture.as_file_text(payload), (
            f"tests/data/alertmanager/{name} is stale; regenerate: .venv/bin/python tests/data/alertmanager/capture.py")
