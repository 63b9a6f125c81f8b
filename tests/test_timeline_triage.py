"""Triage uses time: a change shortly before the onset on the failing edges breaks ties between causes of equal
impact, and never outranks what other steps wait on or what explains more errors (commands.triage.ORDERING)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from commands import codes
from commands.report import triage_lines
from commands.telemetry.changes import Change, ChangeKind
from commands.telemetry.edges import Edge, FailingEdge, Workload
from commands.telemetry.onset import Onset
from commands.telemetry.relate import rank_by_time
from commands.triage import ORDERING, triage
from tests.test_triage import expired_root, istiod_not_ready, istiod_oomkilled, stale_proxy

ONSET = datetime(2026, 12, 1, 9, 50, tzinfo=timezone.utc)


def _deny(name: str):
    return codes.finding("MB7001", origin=f"AuthorizationPolicy shop/{name}", policy=f"shop/{name}",
                         workloads="payments")


def _edge(onset: datetime | None = ONSET) -> FailingEdge:
    return FailingEdge(edge=Edge(Workload("shop", "frontend"), Workload("shop", "payments")), service="payments",
                       reporter="source", errors=4500, total=21000, codes={"403": 4500}, flags={"-": 4500},
                       onset=Onset(at=onset, baseline=0.0, peak=0.5) if onset else None)


def _applied(obj: str, minutes_before_onset: float) -> Change:
    return Change(ONSET - timedelta(minutes=minutes_before_onset), ChangeKind.CONFIG, obj, "applied",
                  "argocd-controller")


def test_a_change_shortly_before_the_onset_pulls_its_cause_above_an_equal_one_and_says_so():
    old, new = _deny("allow-legacy"), _deny("deny-all")
    before = triage([old, new])
    assert [c.finding for c in before.causes] == [old, new]  # equal impact: the findings' order

    ranked, _ = rank_by_time(before, [_edge()], [_applied("AuthorizationPolicy shop/deny-all", 2)])

    assert [c.finding for c in ranked.causes] == [new, old]
    assert ranked.top.timing == ("AuthorizationPolicy shop/deny-all applied by argocd-controller 2 minutes before "
                                 "403s began from frontend to payments")
    assert ranked.top.to_dict()["timing"] == ranked.top.timing


def test_a_change_long_before_the_onset_does_not_pull_a_cause_up():
    old, new = _deny("allow-legacy"), _deny("deny-all")

    ranked, _ = rank_by_time(triage([old, new]), [_edge()], [_applied("AuthorizationPolicy shop/deny-all", 180)])

    assert [c.finding for c in ranked.causes] == [old, new]
    assert all(c.timing is None and "timing" not in c.to_dict() for c in ranked.causes)


def test_healthy_traffic_without_an_onset_does_not_pull_a_cause_up():
    old, new = _deny("allow-legacy"), _deny("deny-all")

    ranked, _ = rank_by_time(triage([old, new]), [_edge(onset=None)],
                             [_applied("AuthorizationPolicy shop/deny-all", 2)])

    assert [c.finding for c in ranked.causes] == [old, new]


def test_time_never_outranks_what_other_steps_wait_on():
    # istiod OOMKilled blocks the root's permissive-mTLS step; a change to the root right before the onset is
    # evidence for the root, yet istiod's memory fix still leads (the root's step cannot work before it).
    result = triage([istiod_oomkilled(), istiod_not_ready(), stale_proxy(), expired_root()])
    root_change = _applied("Secret istio-system/istio-ca-secret", 1)

    ranked, _ = rank_by_time(result, [_edge()], [root_change])

    assert [c.finding.code for c in ranked.causes] == ["MB1002", "MB3001"]
    assert ranked.causes[1].timing is not None  # the evidence is kept, the order is not changed by it


def test_the_ordering_rule_names_time_as_the_last_tie_breaker_in_every_rendering():
    ranked, _ = rank_by_time(triage([expired_root(), stale_proxy()]), [_edge()], [])

    assert ORDERING.endswith("the one changed closest before the errors began")
    assert any(ORDERING in line for line in triage_lines(ranked))
