"""Verification by effect from Prometheus: the failing edges' error share before and after an execution, read
from a real Prometheus on a TSDB backfilled with Istio's ``istio_requests_total`` (recovery, no recovery, partial
recovery), and Envoy's counters as the fallback when Prometheus is absent or fails, the report saying which."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from bot.approvals.inspection import MeshInspector
from bot.approvals.verification import ExecutionChecks
from bot.diagnosis import DiagnosisResult
from commands.actions.effect import Outcome, judge
from commands.actions.plan import Plan
from commands.clients.http import HttpEndpoint
from commands.clients.prometheus import PrometheusClient
from commands.cluster.endpoints import EndpointResolver
from commands.preconditions import Effect
from commands.resources.references import PodRef
from tests.support.http_server import closed_port_url
from tests.support.prometheus import (
    ALERT_AT,
    NoPods,
    OpenMetrics,
    RunningPrometheus,
    minutes_before_alert,
    requests,
    serve_backfilled,
    step_at,
)

EXECUTED_AT = ALERT_AT
FOLLOW_UP_AT = EXECUTED_AT + timedelta(minutes=4)
CHANGE = minutes_before_alert(0) + 1
"""The traffic changes just after the write (the scrape at the write itself still counts the old traffic)."""
PAYMENT = PodRef("prod", "payment-7d9f8c6b5-x2x4k")


def recovery_metrics() -> OpenMetrics:
    """One namespace per outcome; each edge fails at 90 % until the execution."""
    metrics = OpenMetrics()
    # recovered: 503s stop once the change lands; a healthy caller beside it is never a failing edge.
    requests(metrics, ("fixed", "frontend"), ("fixed", "payments"), ok=step_at(CHANGE, 1.0, 10.0),
             failed=step_at(CHANGE, 9.0, 0.0))
    requests(metrics, ("fixed", "checkout"), ("fixed", "payments"), ok=lambda t: 5.0)
    # not recovered: the change did nothing for this edge.
    requests(metrics, ("broken", "web"), ("broken", "api"), ok=lambda t: 1.0, failed=lambda t: 9.0)
    # partly: one edge recovers, the other keeps failing.
    requests(metrics, ("partial", "a"), ("partial", "b"), ok=step_at(CHANGE, 1.0, 10.0),
             failed=step_at(CHANGE, 9.0, 0.0))
    requests(metrics, ("partial", "c"), ("partial", "b"), ok=lambda t: 1.0, failed=lambda t: 9.0, code="403")
    # halved: 90 % -> 40 %, better but still failing.
    requests(metrics, ("halved", "x"), ("halved", "y"), ok=step_at(CHANGE, 1.0, 6.0),
             failed=step_at(CHANGE, 9.0, 4.0))
    return metrics


@pytest.fixture(scope="module")
def recovery_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    yield from serve_backfilled(tmp_path_factory, "prometheus-recovery", recovery_metrics())


@dataclass
class Clock:
    now: datetime = EXECUTED_AT

    def __call__(self) -> datetime:
        return self.now




def inspector(clock: Clock, *, prometheus_url: str | None, envoy_admin: str | None = None) -> MeshInspector:
    endpoints = EndpointResolver(http=lambda url: HttpEndpoint(url, timeout=5),
                                 envoy_admin_urls={PAYMENT: envoy_admin} if envoy_admin else {})
    return MeshInspector(diagnose=lambda checks, namespace: DiagnosisResult(), endpoints=lambda: endpoints,
                         source=NoPods, istio_namespace="istio-system", clock=clock,
                         prometheus=lambda: PrometheusClient(prometheus_url, timeout=5) if prometheus_url else None)


def before_and_after(prometheus: RunningPrometheus, namespace: str):
    clock = Clock()
    eyes = inspector(clock, prometheus_url=prometheus.url)
    before = eyes.observe(namespace)
    clock.now = FOLLOW_UP_AT
    return before, eyes.observe(namespace, baseline=before)


def test_traffic_that_recovered_after_the_change_is_seen_with_the_error_share_from_prometheus(recovery_prometheus):
    before, after = before_and_after(recovery_prometheus, "fixed")
    report = judge(Effect.NEW_PODS, before, after)
    assert report.outcome == Outcome.SEEN
    assert "fixed/frontend -> fixed/payments: error share 90% \u2192 0% in 4 minutes" in report.lines
    assert not any("checkout" in line for line in report.lines), "a healthy edge is not a failing edge"
    assert report.lines[-1].startswith(f"traffic measured by Prometheus {recovery_prometheus.url}")
    assert after.edges == {}, "Envoy's counters are not read once Prometheus answered"


def test_traffic_still_failing_after_the_change_is_not_seen(recovery_prometheus):
    report = judge(Effect.NEW_PODS, *before_and_after(recovery_prometheus, "broken"))
    assert report.outcome == Outcome.NOT_SEEN and not report.verified
    assert "broken/web -> broken/api: error share 90% \u2192 90% in 4 minutes \u2014 did not fall" in report.lines


def test_one_edge_recovered_and_one_still_failing_is_partly_seen(recovery_prometheus):
    report = judge(Effect.NEW_PODS, *before_and_after(recovery_prometheus, "partial"))
    assert report.outcome == Outcome.PARTLY
    assert "partial/a -> partial/b: error share 90% \u2192 0% in 4 minutes" in report.lines
    assert "partial/c -> partial/b: error share 90% \u2192 90% in 4 minutes \u2014 did not fall" in report.lines


def test_an_error_share_that_halved_but_stays_over_five_percent_is_partly_seen_never_verified(recovery_prometheus):
    report = judge(Effect.NEW_PODS, *before_and_after(recovery_prometheus, "halved"))
    assert report.outcome == Outcome.PARTLY
    assert "halved/x -> halved/y: error share 90% \u2192 40% in 4 minutes \u2014 fell, but not under 5%" in report.lines


def test_the_follow_up_of_an_execution_reads_the_edges_failing_before_it_from_prometheus(recovery_prometheus):
    clock = Clock()
    checks = ExecutionChecks(inspector(clock, prometheus_url=recovery_prometheus.url), settle=timedelta(0))
    plan = Plan("bypass namespace fixed", "bypass", (), extra={"effect": "new-pods", "scope": "fixed"})
    baseline = checks.baseline(plan)
    assert baseline is not None and baseline.windowed is not None
    assert set(baseline.windowed) == {"fixed/frontend -> fixed/payments"}
    clock.now = FOLLOW_UP_AT
    verification = checks.after(plan, baseline, clock.now)
    followed = checks.follow_up(plan, verification)
    assert followed is not None and followed.outcome == Outcome.SEEN


def test_without_prometheus_envoys_counters_judge_and_the_report_says_so(upstream_envoy):
    envoy = upstream_envoy(retries=0)
    clock = Clock()
    eyes = inspector(clock, prometheus_url=None, envoy_admin=envoy.envoy.admin_url)
    envoy.send("/pay", 10)
    before = eyes.observe("prod")
    envoy.send("/ok", 10)
    clock.now = FOLLOW_UP_AT
    report = judge(Effect.NEW_PODS, before, eyes.observe("prod", baseline=before))
    assert report.outcome == Outcome.SEEN
    assert "5xx share 100% \u2192 0% in 4 minutes" in " ".join(report.lines)
    assert report.lines[-1] == ("traffic measured by Envoy's counters (no Prometheus is configured: "
                                "MESHBOT_PROMETHEUS_URL)")


def test_a_prometheus_that_does_not_answer_falls_back_to_envoys_counters_and_says_why(upstream_envoy):
    envoy = upstream_envoy(retries=0)
    down = closed_port_url()
    clock = Clock()
    eyes = inspector(clock, prometheus_url=down, envoy_admin=envoy.envoy.admin_url)
    envoy.send("/pay", 10)
    before = eyes.observe("prod")
    assert before.windowed is None and before.prometheus_error
    envoy.send("/pay", 10)
    clock.now = FOLLOW_UP_AT
    report = judge(Effect.NEW_PODS, before, eyes.observe("prod", baseline=before))
    assert report.outcome == Outcome.NOT_SEEN
    assert report.lines[-1].startswith(f"traffic measured by Envoy's counters: Prometheus {down} failed (")
