"""End to end with the real Alertmanager: alerts pushed into it reach meshbot as one thread per group."""

from __future__ import annotations

import pytest

from tests.support.alertmanager import alert, resolved

TOKEN = "am-e2e-token-9876543210"


@pytest.fixture
def incident_bot(bot_factory):
    return bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT")


def test_alerts_through_alertmanager_make_exactly_one_thread_per_group_and_a_resolve_updates_it(
        incident_bot, alertmanager_factory, fake_slack):
    alertmanager = alertmanager_factory(f"{incident_bot.url}/alertmanager", bearer_token=TOKEN)
    crash_x = alert("EnvoySidecarCrashLoop", labels={"namespace": "prod", "pod": "payment-7d9f8c6b5-x2x4k",
                                                     "container": "istio-proxy", "severity": "critical"},
                    annotations={"summary": "Envoy sidecar crash loop detected"})
    crash_q = alert("EnvoySidecarCrashLoop", labels={"namespace": "prod", "pod": "payment-7d9f8c6b5-q8r2n",
                                                     "container": "istio-proxy", "severity": "critical"},
                    annotations={"summary": "Envoy sidecar crash loop detected"})
    istiod = alert("IstiodDown", labels={"namespace": "istio-system", "job": "istiod", "severity": "critical"},
                   annotations={"summary": "Istio control plane is down"})
    alertmanager.push(crash_x, crash_q, istiod)

    tops = fake_slack.wait_for(lambda: len(fake_slack.messages(top_level=True)) >= 2 and
                               fake_slack.messages(top_level=True), timeout=20, what="two incident threads")
    assert sorted(t["text"].split(":")[1].strip() for t in tops) == ["EnvoySidecarCrashLoop", "IstiodDown"]

    alertmanager.push(resolved(crash_x), resolved(crash_q))
    crash_top = next(t for t in tops if "EnvoySidecarCrashLoop" in t["text"])
    update = fake_slack.wait_for(lambda: [c.args for c in fake_slack.of("chat.update")
                                          if c.args["_ok"] and c.args["text"].startswith("RESOLVED")],
                                 timeout=20, what="the resolved update")[0]
    assert update["ts"] == crash_top["_ts"]
    assert len(fake_slack.messages(top_level=True)) == 2  # still exactly one thread per group
    statuses = dict(incident_bot.database.db.execute("SELECT title, status FROM incidents").fetchall())
    assert sorted(statuses.values()) == ["open", "resolved"]
