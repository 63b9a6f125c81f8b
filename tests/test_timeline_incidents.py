"""The timeline in an incident: the top message says when it started, who is failing whom and the last change
before it; the thread gets the short timeline, the full text and the error-ratio graph (a real PNG through the
upload flow).  On the bundled outage's captured answers (examples/demo/timeline), over real HTTP."""

from __future__ import annotations

import pytest

from bot.incidents.log import IncidentLog
from tests.support.bot import quiesce
from tests.test_incidents import TOKEN, high_error_rate, last_update, send, thread, top_levels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAST_CHANGE = "VirtualService prod/payment-routes applied by argocd-controller, 2 minutes before the onset"


@pytest.fixture
def outage(bot_factory, fake_slack):
    """The bundled outage's error-rate alert, diagnosed and delivered."""
    meshbot = bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT")
    assert send(meshbot, high_error_rate()).status_code == 200
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    fake_slack.wait_for(lambda: fake_slack.files or None, timeout=30, what="the timeline graph")
    quiesce(meshbot)
    return meshbot, top


def test_the_top_message_shows_the_onset_on_the_first_failing_edge_and_the_last_change_before_it(outage, fake_slack):
    _, top = outage

    text = str(last_update(fake_slack, top, "Started")["blocks"])

    assert "*Started:* <!date^" in text
    assert "(17 minutes before the alert) on `api-service.prod -&gt; payment-service.prod`" in text
    # The last change is named as the timeline's line or, when it ties to the probable cause, beside the cause
    # (a short top message drops the timeline's lines from the end; the thread's timeline has them all).
    assert "VirtualService prod/payment-routes applied by argocd-controller" in text


def test_the_thread_gets_the_short_timeline_after_the_triage_then_the_full_text_and_the_graph(outage, fake_slack):
    _, top = outage
    replies = thread(fake_slack, top)
    [timeline] = [m for m in replies if m["text"].startswith("Timeline \u00b7 incident #1")]

    assert replies.index(timeline) > next(i for i, m in enumerate(replies) if m["text"].startswith("Triage"))
    body = str(timeline["blocks"])
    assert "*Failing edges* (worst first)" in body and "503 \u00d713100 (flags UF URX) (since 02:41)" in body
    assert "02:39 `VirtualService prod/payment-routes` applied by argocd-controller \u2014 2 minutes before" in body
    assert "BackOff on `Pod prod/payment-service-7d9f8c6b5-x2x4k`" in body
    files = sorted((f for f in fake_slack.files.values() if "timeline" in f.filename), key=lambda f: f.filename)
    assert [f.filename for f in files] == ["incident-1-timeline.png", "incident-1-timeline.txt"]
    graph, text = files
    assert graph.content.startswith(PNG_SIGNATURE) and graph.thread_ts == top["_ts"] and graph.channel == "CINCIDENT"
    assert graph.alt_txt.startswith("Error ratio of 2 failing edges, worst api-service.prod -> payment-service.prod")
    assert b"Last change before it: VirtualService prod/payment-routes" in text.content


def test_the_diagnosis_keeps_the_timeline_so_a_restart_renders_the_same_top_message(outage):
    meshbot, _ = outage

    stored = IncidentLog(meshbot.database).latest_diagnosis(1)

    assert stored.timeline["onset"] == "2026-11-24T02:41:00Z"
    assert stored.timeline["last_change"] == LAST_CHANGE
    assert stored.timeline["edges"][0]["edge"] == "api-service.prod -> payment-service.prod"
