"""Alertmanager webhooks -> incidents, one thread per group, over real HTTP with the fake Slack."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.incidents.log import IncidentLog
from tests.support.kube import write_kubeconfig
from tests.support.slack import FakeSlack

DATA = Path(__file__).parent / "data" / "alertmanager"
TOKEN = "am-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent


def payload(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def incident_bot(bot_factory):
    return bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT")


def send(meshbot, body: dict | bytes, *, token: str | None = TOKEN) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{meshbot.url}/alertmanager", content=content, headers=headers)


def top_levels(fake_slack: FakeSlack) -> list[dict]:
    return fake_slack.messages(top_level=True)


def thread(fake_slack: FakeSlack, top: dict) -> list[dict]:
    return fake_slack.messages(thread_ts=top["_ts"])


def wait_for_diagnostics(fake_slack: FakeSlack, top: dict) -> dict:
    return fake_slack.wait_for(lambda: [m for m in thread(fake_slack, top) if "Diagnostics" in m["text"]],
                               timeout=20, what="the diagnostics in the thread")[0]


def stored_notifications(meshbot) -> int:
    return meshbot.database.db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]


def test_first_notification_opens_an_incident_with_a_top_level_message_and_diagnostics_in_its_thread(
        incident_bot, fake_slack):
    started = time.monotonic()
    response = send(incident_bot, payload("firing.json"))
    assert response.status_code == 200 and time.monotonic() - started < 1.0
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    assert top["channel"] == "CINCIDENT"
    assert top["text"].startswith("CRITICAL: EnvoySidecarCrashLoop")
    text = str(top["blocks"])
    assert "`prod`" in text and "Alertmanager" in text and "Incident #1" in text
    diagnostics = wait_for_diagnostics(fake_slack, top)
    assert "playbook envoy-sidecar-crash-loop" in diagnostics["text"]
    assert "CrashLoopBackOff (25 restarts)" in str(diagnostics["blocks"])
    assert "Bypass the mesh for the crash-looping workload" in str(diagnostics["blocks"])


def test_resent_notifications_for_the_group_never_open_a_second_incident(incident_bot, fake_slack):
    for _ in range(5):
        assert send(incident_bot, payload("firing.json")).status_code == 200
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    time.sleep(1.5)
    assert len(top_levels(fake_slack)) == 1
    assert len(thread(fake_slack, top)) == 1  # only the diagnostics: nothing new happened
    assert incident_bot.database.db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0] == 1


def test_a_new_firing_alert_in_the_group_is_appended_to_the_thread(incident_bot, fake_slack):
    first = payload("firing.json")
    first["alerts"] = first["alerts"][:1]
    send(incident_bot, first)
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    send(incident_bot, payload("firing.json"))
    new = fake_slack.wait_for(lambda: [m for m in thread(fake_slack, top) if m["text"].startswith("Alert firing")],
                              what="the new alert in the thread")
    assert "payment-7d9f8c6b5-x2x4k" in new[0]["text"]
    assert len(top_levels(fake_slack)) == 1


def test_group_resolution_updates_the_top_message_and_closes_the_incident(incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    send(incident_bot, payload("resolved.json"))
    update = fake_slack.wait_for(lambda: [c.args for c in fake_slack.of("chat.update")
                                          if c.args["_ok"] and c.args["text"].startswith("RESOLVED")],
                                 what="the resolved update")[0]
    assert update["ts"] == top["_ts"]
    assert "Resolved after" in str(update["blocks"])
    row = next(iter(incident_bot.database.db.query("SELECT status, resolved_at FROM incidents")))
    assert row["status"] == "resolved" and row["resolved_at"]


def test_a_restart_does_not_open_a_second_incident_for_the_same_group(bot_factory, fake_slack):
    first = bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT")
    send(first, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    first.stop()
    second = bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT")
    send(second, payload("firing.json"))
    send(second, payload("resolved.json"))
    fake_slack.wait_for(lambda: [c for c in fake_slack.of("chat.update") if c.args["text"].startswith("RESOLVED")],
                        what="the resolved update after the restart")
    assert len(top_levels(fake_slack)) == 1


def test_a_stored_notification_that_cannot_be_applied_is_set_aside_and_the_next_ones_still_open_incidents(
        incident_bot, fake_slack):
    # E.g. stored by an older meshbot whose successor reads it differently: kept, with the error, not retried forever.
    with incident_bot.database.transaction() as db:
        db.execute("INSERT INTO notifications (received_at, group_key, status, body) VALUES (?, ?, ?, ?)",
                   ["2026-11-23T03:00:00Z", "g", "firing", '{"groupKey": "g"}'])
    send(incident_bot, payload("firing.json"))
    fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident of the good notification")
    rows = list(incident_bot.database.db.query("SELECT body, processed_at, error FROM notifications ORDER BY id"))
    assert rows[0]["processed_at"] and rows[0]["error"].startswith("not applied: PayloadError")
    assert rows[0]["body"] == '{"groupKey": "g"}', "kept for a human to look at"
    metrics = httpx.get(f"{incident_bot.url}/metrics").text
    assert "meshbot_alert_notifications_failed_total 1.0" in metrics


def test_diagnostics_are_posted_once_even_if_a_second_run_is_started(incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    incident_id = incident_bot.database.db.execute("SELECT id FROM incidents").fetchone()[0]

    incident_bot.incident_flow.diagnose(incident_id)  # what a restart's catch-up racing the processor would do

    assert len([m for m in thread(fake_slack, top) if "Diagnostics" in m["text"]]) == 1
    runs = [e for e in IncidentLog(incident_bot.database).timeline(incident_id) if e.kind == "diagnostics_run"]
    assert len(runs) == 1


def test_posts_recorded_while_slack_is_down_are_delivered_in_order_after_it_comes_back(incident_bot, fake_slack):
    fake_slack.down = True
    send(incident_bot, payload("firing.json"))
    time.sleep(1.0)
    assert top_levels(fake_slack) == []
    fake_slack.down = False
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), timeout=15, what="delivery after the outage")
    wait_for_diagnostics(fake_slack, top)


@pytest.mark.parametrize("token, status", [(None, 401), ("wrong-token", 401), (TOKEN[:-1], 401)])
def test_missing_or_wrong_bearer_token_is_401_and_nothing_is_stored(incident_bot, token, status):
    response = send(incident_bot, payload("firing.json"), token=token)
    assert response.status_code == status
    assert stored_notifications(incident_bot) == 0


def test_without_a_configured_token_every_webhook_is_refused(bot_factory):
    meshbot = bot_factory()
    assert send(meshbot, payload("firing.json")).status_code == 401


def test_bodies_over_1_mib_are_413_and_nothing_is_stored(incident_bot):
    response = send(incident_bot, b"{" + b" " * (1024 * 1024) + b"}")
    assert response.status_code == 413
    assert stored_notifications(incident_bot) == 0


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "body is not JSON"),
    (json.dumps({"status": "firing", "alerts": []}).encode(), "groupKey"),
])
def test_malformed_payloads_are_400_with_a_reason_and_nothing_is_stored(incident_bot, body, reason):
    response = send(incident_bot, body)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert stored_notifications(incident_bot) == 0


def test_webhook_is_answered_long_before_slow_diagnostics_finish(bot_factory, kube, tmp_path, fake_slack):
    # Every diagnostic waits 3 s on the cluster; a webhook that waited for one would take that long.
    kube.slow("Pod", 3)
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    meshbot = bot_factory(scenario=None, kubeconfig=config, kube_context="kmock", alertmanager_token=TOKEN,
                          channel="CINCIDENT")
    timings = []
    for i in range(10):
        data = copy.deepcopy(payload("firing.json"))
        data["groupKey"] = f"group-{i}"
        started = time.perf_counter()
        assert send(meshbot, data).status_code == 200
        timings.append(time.perf_counter() - started)
    assert max(timings) < 1.0
    assert stored_notifications(meshbot) == 10


# -- /mesh incident ... ------------------------------------------------------------------

def slash(meshbot, fake_slack, text: str, user: str = "UALICE") -> httpx.Response:
    from tests.support.slack import post_signed, slash_command_body

    body = slash_command_body(text, user_id=user, response_url=fake_slack.response_url())
    return post_signed(f"{meshbot.url}/slack/events", body)


def ephemeral_answers(fake_slack: FakeSlack, count: int) -> list[str]:
    return [r["text"] for r in fake_slack.wait_for(lambda: len(fake_slack.responses) >= count and
                                                   fake_slack.responses, what=f"{count} ephemeral answers")]


def test_incident_slash_commands_list_show_note_and_resolve(incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    slash(incident_bot, fake_slack, "incident list")
    assert "*#1* [critical] EnvoySidecarCrashLoop" in ephemeral_answers(fake_slack, 1)[0]
    slash(incident_bot, fake_slack, "incident note 1 restarted payment by hand, watching")
    assert ephemeral_answers(fake_slack, 2)[1] == "Noted on incident #1."
    slash(incident_bot, fake_slack, "incident show 1")
    timeline = ephemeral_answers(fake_slack, 3)[2]
    assert "note: restarted payment by hand, watching" in timeline and "UALICE" in timeline
    slash(incident_bot, fake_slack, "incident resolve #1", user="UBOB")
    assert ephemeral_answers(fake_slack, 4)[3] == "Incident #1 resolved."
    fake_slack.wait_for(lambda: [m for m in thread(fake_slack, top) if "resolved by <@UBOB>" in m["text"]],
                        what="the resolution in the thread")
    slash(incident_bot, fake_slack, "incident list")
    assert ephemeral_answers(fake_slack, 5)[4] == "No open incidents. :tada:"


@pytest.mark.parametrize("text, complaint", [("incident", "which incident command"),
                                             ("incident show abc", "not an incident number"),
                                             ("incident note 1", "usage"), ("incident explode 1", "unknown incident")])
def test_bad_incident_commands_get_usage(incident_bot, fake_slack, text, complaint):
    answer = slash(incident_bot, fake_slack, text).json()
    assert answer["response_type"] == "ephemeral" and complaint in answer["text"]


def test_show_of_an_unknown_incident_says_so(incident_bot, fake_slack):
    slash(incident_bot, fake_slack, "incident show 99")
    assert ephemeral_answers(fake_slack, 1)[0] == ":warning: there is no incident #99"


# -- the CLI: list, export, verify ---------------------------------------------------------

def meshbot_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_export_is_a_postmortem_ready_timeline_in_markdown_and_json(incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    send(incident_bot, payload("resolved.json"))
    fake_slack.wait_for(lambda: [c for c in fake_slack.of("chat.update") if c.args["text"].startswith("RESOLVED")],
                        what="the resolution")
    db = incident_bot.settings.db_path
    markdown = meshbot_cli("incidents", "--db", db, "export", "1", "--format", "md")
    assert markdown.returncode == 0, markdown.stderr
    text = markdown.stdout
    assert text.startswith("# Incident #1: EnvoySidecarCrashLoop")
    for expected in ("## Alerts", "## Findings", "## Timeline", "Diagnostics (playbook `envoy-sidecar-crash-loop`)",
                     "Posted to Slack (ts", "State open \u2192 resolved"):
        assert expected in text, expected
    exported = json.loads(meshbot_cli("incidents", "--db", db, "export", "1", "--format", "json").stdout)
    kinds = [e["kind"] for e in exported["events"]]
    assert kinds[0] == "incident_opened" and "diagnostics_run" in kinds and kinds[-1] in ("state_changed",
                                                                                      "message_posted")
    listing = meshbot_cli("incidents", "--db", db, "list", "--all")
    assert "#1" in listing.stdout and "resolved" in listing.stdout


def test_verify_detects_an_edited_event(incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    db = incident_bot.settings.db_path
    assert meshbot_cli("incidents", "--db", db, "verify").returncode == 0
    incident_bot.stop()
    import sqlite3

    connection = sqlite3.connect(db)
    connection.execute("DROP TRIGGER events_no_update")  # what an attacker with file access could do
    connection.execute("UPDATE events SET actor = 'mallory' WHERE id = 2")
    connection.commit()
    connection.close()
    result = meshbot_cli("incidents", "--db", db, "verify")
    assert result.returncode == 1
    assert "event 2: content does not match its hash" in result.stderr
