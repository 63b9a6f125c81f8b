"""Regenerate the Alertmanager webhook samples in this directory with the real Alertmanager 0.25.

Run from the repository root (needs ``apt-get install -y prometheus-alertmanager``)::

    .venv/bin/python tests/data/alertmanager/capture.py          # rewrite the samples
    .venv/bin/python tests/data/alertmanager/capture.py --check  # exit 1 if they differ

Every sample is a webhook body exactly as Alertmanager POSTed it, re-indented for
reading (key order kept). Alert times, ``generatorURL`` and ``--web.external-url``
are fixed, so a run reproduces the files byte for byte; ``test_alertmanager_fixture``
re-captures them and fails when they drift.

=============================  ==========================================================
``firing.json``                EnvoySidecarCrashLoop in prod, two pods: one firing group
``two_groups_circuit_open.json``  the other group delivered alongside ``firing.json``
                               (EnvoyUpstreamCircuitOpen in prod, one alert)
``resolved.json``              the ``firing.json`` group after both alerts resolved
``partially_resolved.json``    the same group after only pod x2x4k resolved: the group
                               is still ``firing``, one alert in it is ``resolved``
``truncated.json``             the ``firing.json`` group through ``max_alerts: 1``
                               (``truncatedAlerts: 1``, one alert in ``alerts``)
=============================  ==========================================================
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

if __name__ == "__main__":  # run as a script: make `tests.support` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.support.alertmanager import (  # noqa: E402
    WEBHOOK_PATH,
    Delivery,
    RunningAlertmanager,
    WebhookDeliveries,
    alert,
    resolved,
    start_alertmanager,
)
from tests.support.http_server import start_server  # noqa: E402

HERE = Path(__file__).resolve().parent
BEARER_TOKEN = "meshbot-webhook-token"
EXTERNAL_URL = "http://alertmanager.monitoring.svc:9093"
STARTED = datetime(2024, 5, 14, 9, 12, 0, tzinfo=timezone.utc)
ENDED = datetime(2024, 5, 14, 9, 31, 30, tzinfo=timezone.utc)
PROMETHEUS = "http://prometheus.monitoring.svc:9090/graph?g0.expr="

CRASHLOOP_ANNOTATIONS = {
    # A summary without the pod is common to the group (commonAnnotations); the description is not.
    "summary": "istio-proxy sidecars are crash-looping in prod",
    "description": "Container istio-proxy of pod prod/{pod} restarted 5 times in the last 10 minutes.",
}


def crashloop(pod: str) -> dict[str, Any]:
    return alert("EnvoySidecarCrashLoop", labels={
        "namespace": "prod", "pod": pod, "container": "istio-proxy", "severity": "critical"},
        annotations={k: v.format(pod=pod) for k, v in CRASHLOOP_ANNOTATIONS.items()},
        starts_at=STARTED,
        generator_url=PROMETHEUS + "increase%28kube_pod_container_status_restarts_total%7Bcontainer%3D%22istio-proxy"
                                   "%22%7D%5B10m%5D%29+%3E+3&g0.tab=1")


CRASHLOOP_X2X4K = crashloop("payment-7d9f8c6b5-x2x4k")
CRASHLOOP_Q8R2N = crashloop("payment-7d9f8c6b5-q8r2n")
CIRCUIT_OPEN = alert("EnvoyUpstreamCircuitOpen", labels={
    "namespace": "prod", "destination_service_name": "payment", "pod": "checkout-5c8d7f9b4-m7k2p",
    "severity": "warning"},
    annotations={"summary": "Circuit breaker open towards payment.prod",
                 "description": "Envoy in prod/checkout-5c8d7f9b4-m7k2p is shedding requests to payment: "
                                "rq_open > 0 for 2 minutes."},
    starts_at=STARTED,
    generator_url=PROMETHEUS + "envoy_cluster_circuit_breakers_default_rq_open+%3E+0&g0.tab=1")

CRASHLOOP_GROUP = '{}:{alertname="EnvoySidecarCrashLoop", namespace="prod"}'
CIRCUIT_OPEN_GROUP = '{}:{alertname="EnvoyUpstreamCircuitOpen", namespace="prod"}'

Scenario = Callable[[RunningAlertmanager, WebhookDeliveries], dict[str, dict[str, Any]]]


def of_group(deliveries: list[Delivery], group_key: str) -> list[dict[str, Any]]:
    return [d.payload for d in deliveries if d.payload["groupKey"] == group_key]


# The alerts started in 2024, so Alertmanager flushes a new group the moment its first
# alert arrives, racing the second alert of the same push; a split group is complete one
# group_interval later. So each scenario waits for the delivery it wants by content, not count.

def with_both_pods(payload: dict[str, Any]) -> bool:
    return len(payload["alerts"]) == 2


def firing_then_resolved(alertmanager: RunningAlertmanager, deliveries: WebhookDeliveries) -> dict[str, Any]:
    alertmanager.push(CRASHLOOP_X2X4K, CRASHLOOP_Q8R2N, CIRCUIT_OPEN)
    first = deliveries.wait_for(lambda ds: any(map(with_both_pods, of_group(ds, CRASHLOOP_GROUP)))
                                and of_group(ds, CIRCUIT_OPEN_GROUP), alertmanager=alertmanager)
    alertmanager.push(resolved(CRASHLOOP_X2X4K, ENDED), resolved(CRASHLOOP_Q8R2N, ENDED))
    later = deliveries.wait_for(lambda ds: any(p["status"] == "resolved" for p in of_group(ds, CRASHLOOP_GROUP)),
                                alertmanager=alertmanager)
    return {"firing.json": next(filter(with_both_pods, of_group(first, CRASHLOOP_GROUP))),
            "two_groups_circuit_open.json": of_group(first, CIRCUIT_OPEN_GROUP)[0],
            "resolved.json": next(p for p in of_group(later, CRASHLOOP_GROUP) if p["status"] == "resolved")}


def partially_resolved(alertmanager: RunningAlertmanager, deliveries: WebhookDeliveries) -> dict[str, Any]:
    alertmanager.push(CRASHLOOP_X2X4K, CRASHLOOP_Q8R2N)
    deliveries.wait_for(lambda ds: any(with_both_pods(d.payload) for d in ds), alertmanager=alertmanager)
    alertmanager.push(resolved(CRASHLOOP_X2X4K, ENDED))

    def one_resolved(payload: dict[str, Any]) -> bool:
        return any(a["status"] == "resolved" for a in payload["alerts"])

    received = deliveries.wait_for(lambda ds: any(one_resolved(d.payload) for d in ds), alertmanager=alertmanager)
    return {"partially_resolved.json": next(d.payload for d in received if one_resolved(d.payload))}


def truncated(alertmanager: RunningAlertmanager, deliveries: WebhookDeliveries) -> dict[str, Any]:
    alertmanager.push(CRASHLOOP_X2X4K, CRASHLOOP_Q8R2N)
    received = deliveries.wait_for(lambda ds: any(d.payload["truncatedAlerts"] for d in ds), alertmanager=alertmanager)
    return {"truncated.json": next(d.payload for d in received if d.payload["truncatedAlerts"])}


SCENARIOS: list[tuple[Scenario, dict[str, Any]]] = [
    (firing_then_resolved, {}),
    (partially_resolved, {}),
    (truncated, {"max_alerts": 1}),
]


def run(scenario: Scenario, options: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One scenario against its own receiver and Alertmanager, stopped afterwards."""
    receiver, server = start_server()
    receiver.answer(WEBHOOK_PATH, "ok")
    alertmanager = start_alertmanager(receiver.url + WEBHOOK_PATH, bearer_token=BEARER_TOKEN, tmp_path=workdir,
                                      external_url=EXTERNAL_URL, **options)
    try:
        return scenario(alertmanager, WebhookDeliveries(receiver))
    finally:
        alertmanager.stop()
        server.shutdown()
        server.server_close()


def capture_all() -> dict[str, dict[str, Any]]:
    """Every sample, freshly captured from the real Alertmanager: file name -> webhook payload."""
    with TemporaryDirectory(prefix="alertmanager-capture-") as tmp, ThreadPoolExecutor(len(SCENARIOS)) as pool:
        runs = [pool.submit(run, scenario, options, Path(tmp) / scenario.__name__) for scenario, options in SCENARIOS]
        return {name: payload for future in runs for name, payload in future.result().items()}


def as_file_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2) + "\n"


def main(argv: list[str]) -> int:
    samples = capture_all()
    if "--check" in argv:
        stale = [name for name, payload in samples.items()
                 if not (HERE / name).exists() or (HERE / name).read_text() != as_file_text(payload)]
        print("stale: " + ", ".join(stale) if stale else "all samples match the real Alertmanager")
        return 1 if stale else 0
    for name, payload in samples.items():
        (HERE / name).write_text(as_file_text(payload))
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
