"""Verification by effect: seen, not seen and partly seen, from captured istiod syncz answers and from a fake
istiod plus a real Envoy whose counters move with the traffic the test sends."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from commands.actions.effect import Observation, Outcome, judge, observe
from commands.checks.syncz import parse_syncz
from commands.clients.http import HttpEndpoint
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import Snapshot
from commands.preconditions import Effect
from commands.resources.references import PodRef

SYNCZ = Path(__file__).parent / "data" / "syncz"
T0 = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
PAYMENT = PodRef("prod", "payment-7d9f8c6b5-x2x4k")


def captured(name: str) -> list[dict]:
    return json.loads((SYNCZ / name).read_text())


def pushed(entries: list[dict], *proxies: str, push: str = "push-2") -> list[dict]:
    """The same answer after istiod pushed once more to ``proxies`` and they acknowledged it (sent == acked)."""
    out = copy.deepcopy(entries)
    for entry in out:
        if entry["proxy"] in proxies:
            for prefix in ("cluster", "listener", "route", "endpoint"):
                entry[f"{prefix}_sent"] = entry[f"{prefix}_acked"] = f"{prefix}-{push}"
    return out


def observation(entries: list[dict] | None, at: datetime, namespace: str | None = None,
                **edges) -> Observation:
    proxies = None if entries is None else {
        p.proxy: {t: (s.sent, s.acked) for t, s in p.types.items()} for p in parse_syncz(entries, "istiod")
        if namespace is None or p.namespace == namespace}
    return Observation(at=at, proxies=proxies, istiod_error=None if entries is not None else "connection refused",
                       edges=edges)


FLAT = "istiod-1.22/flat.json"


def test_config_change_is_verified_when_every_proxy_in_scope_acknowledged_a_new_push():
    before = captured(FLAT)
    everyone = [e["proxy"] for e in before]
    report = judge(Effect.CONFIG, observation(before, T0), observation(pushed(before, *everyone), T0))
    assert report.outcome == Outcome.SEEN and report.verified
    assert "all 5 proxies in scope acknowledged the new config" in report.lines[0]


def test_config_change_is_not_verified_when_no_proxy_acknowledged_anything_new():
    before = captured(FLAT)
    report = judge(Effect.CONFIG, observation(before, T0), observation(before, T0 + timedelta(minutes=2)))
    assert report.outcome == Outcome.NOT_SEEN and not report.verified
    assert "none of the 5 proxies" in report.lines[0]


def test_config_change_is_partly_seen_when_some_proxies_still_have_the_old_config():
    before = captured(FLAT)
    some = [e["proxy"] for e in before][:2]
    report = judge(Effect.CONFIG, observation(before, T0), observation(pushed(before, *some), T0))
    assert report.outcome == Outcome.PARTLY
    assert report.lines[0].startswith("2 of 5 proxies acknowledged the new config")


def test_a_proxy_that_rejected_the_push_does_not_count_as_having_it():
    before = captured("istiod-1.24/nack.json")
    names = [e["proxy"] for e in before]
    report = judge(Effect.CONFIG, observation(before, T0, namespace=None), observation(before, T0, namespace=None))
    assert report.outcome == Outcome.NOT_SEEN and len(names) >= 1


def test_config_change_with_istiod_down_says_no_proxy_has_it_because_istiod_is_not_pushing():
    report = judge(Effect.CONFIG, observation(None, T0), observation(None, T0 + timedelta(minutes=2)))
    assert report.outcome == Outcome.NOT_SEEN
    assert report.lines[0].startswith("no proxy has the new config: istiod is not pushing")


def test_an_istiod_fix_is_seen_when_istiod_answers_again():
    before = captured(FLAT)
    report = judge(Effect.CONTROL_PLANE, observation(None, T0, namespace=None),
                   observation(before, T0 + timedelta(minutes=1), namespace=None))
    assert report.outcome == Outcome.SEEN
    assert "istiod answers again and pushes" in report.lines[0]


def test_an_istiod_fix_is_not_seen_while_istiod_still_does_not_answer():
    report = judge(Effect.CONTROL_PLANE, observation(None, T0), observation(None, T0))
    assert report.outcome == Outcome.NOT_SEEN and "still does not answer" in report.lines[0]


def test_observations_round_trip_through_json_for_the_follow_up():
    before = observation(captured(FLAT), T0)
    assert Observation.from_dict(json.loads(json.dumps(before.to_dict()))) == before


# -- a fake istiod and a real Envoy ---------------------------------------------------------------------------


@pytest.fixture
def mesh(istiod_server, upstream_envoy):
    """istiod's syncz with the payment proxy, and the payment sidecar's Envoy in front of a failing upstream."""
    istiod_server.answer("/debug/syncz", [{"proxy": f"{PAYMENT.name}.prod", "cluster_sent": "c-1",
                                           "cluster_acked": "c-1", "listener_sent": "l-1", "listener_acked": "l-1"}])
    envoy = upstream_envoy(retries=0)
    endpoints = EndpointResolver(http=lambda url: HttpEndpoint(url, timeout=5), istiod_urls=[istiod_server.url],
                                 envoy_admin_urls={PAYMENT: envoy.envoy.admin_url})
    return istiod_server, envoy, endpoints


def look(endpoints: EndpointResolver, at: datetime) -> Observation:
    return observe(endpoints, Snapshot(), "prod", at)


def push_acknowledged(istiod) -> None:
    istiod.answer("/debug/syncz", [{"proxy": f"{PAYMENT.name}.prod", "cluster_sent": "c-2", "cluster_acked": "c-2",
                                    "listener_sent": "l-2", "listener_acked": "l-2"}])


def test_real_envoy_traffic_recovering_after_an_acknowledged_push_is_verified_with_the_share_before_and_after(mesh):
    istiod, envoy, endpoints = mesh
    assert set(envoy.send("/pay", 10)) == {503}
    before = look(endpoints, T0)
    push_acknowledged(istiod)
    assert set(envoy.send("/ok", 10)) == {200}
    report = judge(Effect.CONFIG, before, look(endpoints, T0 + timedelta(minutes=2)))
    assert report.outcome == Outcome.SEEN
    assert "prod/payment-7d9f8c6b5-x2x4k -> payment.prod:8080: 5xx share 100% \u2192 0% in 2 minutes" in report.lines


def test_real_envoy_traffic_still_failing_is_not_seen(mesh):
    _, envoy, endpoints = mesh
    envoy.send("/pay", 10)
    before = look(endpoints, T0)
    envoy.send("/pay", 10)
    report = judge(Effect.NEW_PODS, before, look(endpoints, T0 + timedelta(minutes=3)))
    assert report.outcome == Outcome.NOT_SEEN
    assert any(line.endswith("did not fall") for line in report.lines)


def test_real_envoy_config_acknowledged_but_traffic_still_failing_is_partly_seen(mesh):
    istiod, envoy, endpoints = mesh
    envoy.send("/pay", 10)
    before = look(endpoints, T0)
    push_acknowledged(istiod)
    envoy.send("/pay", 6)
    envoy.send("/ok", 4)
    report = judge(Effect.CONFIG, before, look(endpoints, T0 + timedelta(minutes=2)))
    assert report.outcome == Outcome.PARTLY
    assert "5xx share 100% \u2192 60% in 2 minutes \u2014 did not fall" in " ".join(report.lines)


def test_no_requests_since_the_change_is_not_counted_as_recovery(mesh):
    _, envoy, endpoints = mesh
    envoy.send("/pay", 5)
    before = look(endpoints, T0)
    report = judge(Effect.NEW_PODS, before, look(endpoints, T0 + timedelta(minutes=1)))
    assert report.outcome == Outcome.UNMEASURED
    assert "no requests since the change" in report.lines[0]
