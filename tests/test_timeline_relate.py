"""Relating changes to causes by time: the rule, its window and what must not pull a cause up."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from commands import codes
from commands.telemetry.changes import Change, ChangeKind
from commands.telemetry.edges import Edge, FailingEdge, Workload
from commands.telemetry.onset import Onset
from commands.telemetry.relate import relate
from commands.triage import triage

ONSET = datetime(2026, 12, 1, 9, 50, tzinfo=timezone.utc)
POLICY = "AuthorizationPolicy shop/deny-all"


def _policy_cause():
    return triage([codes.finding("MB7001", origin=POLICY, policy="shop/deny-all", workloads="payments")])


def _edge(onset: datetime | None = ONSET, *, source=("shop", "frontend"), destination=("shop", "payments"),
          code: str = "403") -> FailingEdge:
    return FailingEdge(edge=Edge(Workload(*source), Workload(*destination)), service=destination[1],
                       reporter="source", errors=4500, total=21000, codes={code: 4500}, flags={"-": 4500},
                       onset=Onset(at=onset, baseline=0.0, peak=0.5) if onset else None)


def _change(obj: str, minutes_before_onset: float, *, kind: str = ChangeKind.CONFIG, what: str = "applied",
            manager: str | None = "argocd-controller") -> Change:
    return Change(ONSET - timedelta(minutes=minutes_before_onset), kind, obj, what, manager)


def test_a_change_to_the_cause_shortly_before_the_onset_explains_it_in_words():
    [timing] = relate(_policy_cause(), [_edge()], [_change(POLICY, 2)])

    assert timing.because == ("AuthorizationPolicy shop/deny-all applied by argocd-controller 2 minutes before "
                              "403s began from frontend to payments")
    assert timing.score > 0.9
    assert "15 minutes before that edge's onset" in timing.rule


def test_a_change_long_before_the_onset_does_not_pull_the_cause_up():
    [timing] = relate(_policy_cause(), [_edge()], [_change(POLICY, 180)])

    assert timing.score == 0
    assert timing.because is None


def test_healthy_traffic_without_an_onset_does_not_pull_the_cause_up():
    [timing] = relate(_policy_cause(), [_edge(onset=None)], [_change(POLICY, 2)])

    assert timing.score == 0


def test_a_change_in_another_namespace_is_not_on_the_failing_edge():
    [timing] = relate(_policy_cause(), [_edge()], [_change("VirtualService billing/invoices", 2)])

    assert timing.changes == ()


def test_the_causes_own_object_scores_above_a_neighbour_in_its_namespace():
    [timing] = relate(_policy_cause(), [_edge()], [_change("DestinationRule shop/payments", 1),
                                                   _change(POLICY, 5)])

    assert [t.change.object for t in timing.changes] == [POLICY, "DestinationRule shop/payments"]


def test_a_closer_change_scores_higher_than_an_earlier_one():
    near = relate(_policy_cause(), [_edge()], [_change(POLICY, 1)])[0].score
    far = relate(_policy_cause(), [_edge()], [_change(POLICY, 14)])[0].score

    assert near > far > 0


def test_an_istiod_restart_is_tied_to_a_control_plane_cause_on_any_edge():
    result = triage([codes.finding("MB1002", origin="Pod istio-system/istiod-5d8f7c9b6-qx7wz", role="istiod",
                                   container="discovery", pod="istiod-5d8f7c9b6-qx7wz", restarts=7, limit="2Gi")])
    restart = _change("Pod istio-system/istiod-5d8f7c9b6-qx7wz", 3, kind=ChangeKind.RESTART,
                      what="container discovery restarted (7 restarts, last exit OOMKilled)", manager=None)

    [timing] = relate(result, [_edge(source=("web", "frontend"), destination=("pay", "payments"), code="503")],
                      [restart])

    assert timing.because == ("Pod istio-system/istiod-5d8f7c9b6-qx7wz container discovery restarted (7 restarts, "
                              "last exit OOMKilled) 3 minutes before 503s began from frontend to payments")
