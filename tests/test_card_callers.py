"""The card's blast radius names the callers: the source workloads with traffic to the acted-on namespace or
workload over the last hour, read from a real Prometheus backfilled with Istio's ``istio_requests_total``
(bounded by topk); without a Prometheus the card says the callers are not known, in words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest

from bot.approvals.blocks import request_message
from bot.approvals.inspection import MeshInspector
from bot.diagnosis import DiagnosisResult
from commands.actions import parse_action, plan_action
from commands.actions.annotate import annotate_plan
from commands.clients.prometheus import PrometheusClient
from commands.telemetry.callers import callers_of
from tests.support.http_server import closed_port_url
from tests.support.kube import FakeKube
from tests.support.prometheus import (
    ALERT_AT,
    NoPods,
    OpenMetrics,
    RunningPrometheus,
    requests,
    serve_backfilled,
)
from tests.test_approval_cards import NOW, card_request, payments


def caller_metrics() -> OpenMetrics:
    metrics = OpenMetrics()
    requests(metrics, ("shop", "frontend"), ("payments", "reviews"), ok=lambda t: 10.0)
    requests(metrics, ("payments", "api"), ("payments", "reviews"), ok=lambda t: 4.0)
    requests(metrics, ("shop", "checkout"), ("payments", "api"), ok=lambda t: 2.0)
    # a caller without a sidecar: only the server's proxy reports it, as source_workload "unknown".
    requests(metrics, ("unknown", "unknown"), ("payments", "reviews"), ok=lambda t: 1.0, reporters=("destination",))
    # traffic elsewhere is nobody's caller here.
    requests(metrics, ("shop", "frontend"), ("shop", "cart"), ok=lambda t: 30.0)
    return metrics


@pytest.fixture(scope="module")
def caller_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    yield from serve_backfilled(tmp_path_factory, "prometheus-callers", caller_metrics())


def eyes(prometheus_url: str | None) -> MeshInspector:
    return MeshInspector(diagnose=lambda checks, namespace: DiagnosisResult(), endpoints=lambda: None,
                         source=NoPods, istio_namespace="istio-system", clock=lambda: ALERT_AT,
                         prometheus=lambda: PrometheusClient(prometheus_url, timeout=5) if prometheus_url else None)


def card(kube: FakeKube, text: str, inspector: MeshInspector | None) -> str:
    target = parse_action(text.split())
    plan = annotate_plan(plan_action(kube.client(), target, NOW), target, kube.client(), (), [],
                         callers=inspector.callers if inspector else None)
    return json.dumps(request_message(card_request(plan), NOW).blocks, ensure_ascii=False)


def test_the_card_names_the_callers_of_the_namespace_busiest_first_from_prometheus(kube: FakeKube,
                                                                                  caller_prometheus):
    payments(kube)
    text = card(kube, "permissive-mtls payments", eyes(caller_prometheus.url))
    assert ("Callers of namespace payments in the last 1 hour (Prometheus, busiest first): frontend.shop (36,000 "
            "requests), api.payments (14,400 requests), checkout.shop (7,200 requests), callers without a sidecar "
            "(source unknown) (3,600 requests)") in text
    assert "cart" not in text


def test_a_workload_card_names_only_that_workloads_callers(kube: FakeKube, caller_prometheus):
    payments(kube)
    text = card(kube, "bypass reviews -n payments", eyes(caller_prometheus.url))
    assert "Callers of reviews.payments in the last 1 hour" in text
    assert "frontend.shop" in text and "api.payments" in text and "checkout.shop" not in text


def test_without_prometheus_the_card_says_callers_are_not_known_in_words(kube: FakeKube):
    payments(kube)
    for inspector in (None, eyes(None)):
        text = card(kube, "permissive-mtls payments", inspector)
        assert "Callers: not known without Prometheus" in text


def test_a_prometheus_that_does_not_answer_leaves_the_callers_not_known_and_the_card_stands(kube: FakeKube):
    payments(kube)
    text = card(kube, "permissive-mtls payments", eyes(closed_port_url()))
    assert "Callers: not known: Prometheus did not answer" in text
    assert "Workloads: 2 Deployment(s) in namespace payments" in text


def test_the_callers_question_is_bounded_to_the_busiest(caller_prometheus):
    client = PrometheusClient(caller_prometheus.url, timeout=5)
    try:
        busiest = callers_of(client, "payments", None, ALERT_AT, window=timedelta(hours=1), limit=2)
    finally:
        client.close()
    assert [str(c) for c in busiest] == ["frontend.shop", "api.payments"]
