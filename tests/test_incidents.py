"""Alertmanager webhooks -> incidents, one thread per group, over real HTTP with the fake Slack."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.incidents.blocks import rendered_lines
from bot.incidents.log import IncidentLog
from bot.slack.blocks import Message
from tests.support.bot import quiesce
from tests.support.kube import write_kubeconfig
from tests.support.slack import FakeSlack

DATA = Path(__file__).parent / "data" / "alertmanager"
TOKEN = "am-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent


def payload(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def incident_bot(bot_factory, backend_settings):
    """The incident bot on SQLite, then on PostgreSQL (tests/support/postgres.py): every guarantee on both."""
    return bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT", **backend_settings)


@pytest.fixture
def sqlite_incident_bot(bot_factory):
    """On SQLite only: for tests that edit the database file or run the CLI on it."""
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
    return fake_slack.wait_for(lambda: [m for m in thread(fake_slack, top) if m["text"].startswith("Triage")],
                               timeout=20, what="the triage in the thread")[0]


def replies(fake_slack: FakeSlack, top: dict) -> list[dict]:
    """The thread's replies, without the audit log's own heads (another feature's)."""
    return [m for m in thread(fake_slack, top) if not m["text"].startswith("Audit log head")]


def as_shown(fake_slack: FakeSlack, messages: list[dict]) -> list[dict]:
    """``messages`` as Slack shows them now: each with its latest chat.update applied (a note that was edited)."""
    latest = {c.args["ts"]: c.args for c in fake_slack.of("chat.update") if c.args.get("_ok")}
    return [{**m, **latest.get(m["_ts"], {})} for m in messages]


def joined_note(fake_slack: FakeSlack, top: dict) -> dict:
    """The note in ``top``'s thread saying another alert group joined it (a waiting note, edited)."""
    return fake_slack.wait_for(lambda: [m for m in as_shown(fake_slack, replies(fake_slack, top))
                                        if "joined this incident" in m["text"]],
                               timeout=20, what="the joined note in the first thread")[0]


def last_update(fake_slack: FakeSlack, top: dict, contains: str = "") -> dict:
    """The latest chat.update of ``top`` (waiting for one whose text contains ``contains``)."""
    def updates():
        found = [c.args for c in fake_slack.of("chat.update") if c.args.get("_ok") and c.args["ts"] == top["_ts"]]
        return found if found and contains in found[-1]["text"] + str(found[-1]["blocks"]) else None
    return fake_slack.wait_for(updates, timeout=20, what=f"an update of the top message with {contains!r}")[-1]


# The bundled outage (examples/demo/scenario.yaml) as Alertmanager sends it, with the annotations of
# deploy/prometheus/meshbot-alerts.rules.yaml.
def outage_alert(name: str, labels: dict, annotations: dict, starts_at: str, fingerprint: str) -> dict:
    return {"version": "4", "groupKey": f'{{}}:{{alertname="{name}"}}', "status": "firing", "receiver": "meshbot",
            "groupLabels": {"alertname": name}, "commonLabels": {"alertname": name, **labels},
            "commonAnnotations": annotations, "externalURL": "http://alertmanager.monitoring.svc:9093",
            "truncatedAlerts": 0,
            "alerts": [{"status": "firing", "labels": {"alertname": name, **labels}, "annotations": annotations,
                        "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fingerprint,
                        "generatorURL": "http://prometheus.monitoring.svc:9090/graph?g0.expr=up"}]}


def high_error_rate() -> dict:
    return outage_alert(
        "ServiceMeshHighErrorRate", {"namespace": "prod", "destination_service_namespace": "prod",
                                     "destination_service_name": "payment-service", "severity": "critical"},
        {"summary": "payment-service.prod answers 38% 5xx",
         "description": "More than 5% of the requests to this service fail with a 5xx.",
         "runbook_url": "https://github.com/example/meshbot/blob/main/playbooks/service-mesh-high-error-rate.yaml"},
        "2026-11-24T02:58:00Z", "5be1c0a2d3e4f506")


def istiod_down() -> dict:
    return outage_alert(
        "IstiodDown", {"namespace": "istio-system", "severity": "critical"},
        {"summary": "istiod is down", "description": "No istiod instance in istio-system has answered Prometheus "
                                                     "for a minute.",
         "runbook_url": "https://github.com/example/meshbot/blob/main/playbooks/istiod-down.yaml"},
        "2026-11-24T03:01:00Z", "9a8b7c6d5e4f3a2b")


def stored_notifications(meshbot) -> int:
    return meshbot.intake.db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]


def test_first_notification_opens_an_incident_with_a_top_level_message_and_diagnostics_in_its_thread(
        incident_bot, fake_slack):
    started = time.monotonic()
    response = send(incident_bot, payload("firing.json"))
    # Answered at once, long before the diagnosis (a loaded CI machine once took 1.2 s; Alertmanager waits 10 s).
    assert response.status_code == 200 and time.monotonic() - started < 5.0
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    assert top["channel"] == "CINCIDENT"
    assert top["text"].startswith("CRITICAL: EnvoySidecarCrashLoop")
    text = str(top["blocks"])
    assert "`prod`" in text and "Alertmanager" in text and "incident #1" in text
    assert "Diagnosing" in text, "the headline says the cause is coming"
    diagnostics = wait_for_diagnostics(fake_slack, top)
    assert "playbook envoy-sidecar-crash-loop" in diagnostics["text"]
    assert "CrashLoopBackOff (25 restarts)" in str(diagnostics["blocks"])


def test_resent_notifications_for_the_group_never_open_a_second_incident(incident_bot, fake_slack):
    for _ in range(5):
        assert send(incident_bot, payload("firing.json")).status_code == 200
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    quiesce(incident_bot)
    assert len(top_levels(fake_slack)) == 1
    assert len(replies(fake_slack, top)) == 2  # only the triage and the timeline: nothing new happened
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
    shown = update["blocks"][0]["text"]["text"]
    # From the alerts' startsAt to their endsAt, not from when meshbot heard of them; no bold CRITICAL.
    assert shown.startswith(":white_check_mark: Resolved \u00b7 EnvoySidecarCrashLoop")
    assert "Lasted 19m (2024-05-14 09:12 UTC \u2192 2024-05-14 09:31 UTC) \u00b7 was critical" in shown
    assert "*CRITICAL" not in str(update["blocks"])
    row = next(iter(incident_bot.database.db.query("SELECT status, resolved_at FROM incidents")))
    assert row["status"] == "resolved" and row["resolved_at"]


def test_a_resolved_group_gets_one_thread_reply_saying_so_not_one_per_alert(incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    quiesce(incident_bot)  # the triage's companions (the timeline, files) are delivered too
    before = len(replies(fake_slack, top))
    send(incident_bot, payload("resolved.json"))
    [note] = fake_slack.wait_for(lambda: [m for m in replies(fake_slack, top) if "Resolved" in str(m["blocks"])],
                                 what="the resolved reply")
    quiesce(incident_bot)
    assert len(replies(fake_slack, top)) == before + 1
    assert "lasted 19m" in str(note["blocks"])


def test_a_restart_does_not_open_a_second_incident_for_the_same_group(bot_factory, fake_slack, backend_settings):
    first = bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT", **backend_settings)
    send(first, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    first.stop()
    second = bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT", **backend_settings)
    send(second, payload("firing.json"))
    send(second, payload("resolved.json"))
    fake_slack.wait_for(lambda: [c for c in fake_slack.of("chat.update") if c.args["text"].startswith("RESOLVED")],
                        what="the resolved update after the restart")
    assert len(top_levels(fake_slack)) == 1


def test_a_stored_notification_that_cannot_be_applied_is_set_aside_and_the_next_ones_still_open_incidents(
        incident_bot, fake_slack):
    # E.g. stored by an older meshbot whose successor reads it differently: kept, with the error, not retried forever.
    with incident_bot.intake.transaction() as db:
        db.execute("INSERT INTO notifications (received_at, group_key, status, body) VALUES (?, ?, ?, ?)",
                   ["2026-11-23T03:00:00Z", "g", "firing", '{"groupKey": "g"}'])
    send(incident_bot, payload("firing.json"))
    fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident of the good notification")
    rows = list(incident_bot.intake.db.query("SELECT body, processed_at, error FROM notifications ORDER BY id"))
    assert rows[0]["processed_at"] and rows[0]["error"].startswith("not applied: PayloadError")
    assert rows[0]["body"] == '{"groupKey": "g"}', "kept for a human to look at"
    metrics = httpx.get(f"{incident_bot.url}/metrics").text
    assert "meshbot_alert_notifications_failed_total 1.0" in metrics


def test_diagnostics_are_posted_once_even_if_a_second_run_is_started(incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    incident_id = incident_bot.database.db.execute("SELECT id FROM incidents").fetchone()[0]

    incident_bot.incident_flow.diagnosis.diagnose(incident_id)  # what a restart's catch-up racing the processor would do

    assert len([m for m in thread(fake_slack, top) if m["text"].startswith("Triage")]) == 1
    runs = [e for e in IncidentLog(incident_bot.database).timeline(incident_id) if e.kind == "diagnostics_run"]
    assert len(runs) == 1


def test_posts_recorded_while_slack_is_down_are_delivered_in_order_after_it_comes_back(incident_bot, fake_slack):
    fake_slack.down = True
    send(incident_bot, payload("firing.json"))
    # Slack answers 503 to everything: the outbox tried, and the post is still queued.
    fake_slack.wait_for(lambda: [c for c in fake_slack.of("chat.postMessage") if not c.args["_ok"]],
                        what="a delivery attempt while Slack is down")
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
    # Every diagnostic waits 3 s on the cluster; a webhook that waited for one would take at least that long.
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
    assert max(timings) < 3.0, timings  # under the cluster's delay: no answer waited for a diagnosis
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
    assert "<@UALICE>: Note: restarted payment by hand, watching" in timeline
    slash(incident_bot, fake_slack, "incident resolve #1 payment restarted, errors gone", user="UBOB")
    assert ephemeral_answers(fake_slack, 4)[3] == ("Incident #1 resolved. Its alert still fires: Alertmanager's next "
                                                   "repeat reopens it.")
    fake_slack.wait_for(lambda: [m for m in thread(fake_slack, top) if "resolved by <@UBOB>" in m["text"]],
                        what="the resolution in the thread")
    slash(incident_bot, fake_slack, "incident list")
    assert ephemeral_answers(fake_slack, 5)[4] == "No open incidents. :tada:"


def test_resolving_while_the_alert_fires_asks_for_a_note_and_changes_nothing_without_one(incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    slash(incident_bot, fake_slack, "incident resolve 1", user="UBOB")
    answer = ephemeral_answers(fake_slack, 1)[0]
    assert answer.startswith("EnvoySidecarCrashLoop is still firing, so incident #1 stays open.")
    assert "`/mesh incident resolve 1 NOTE`" in answer
    assert IncidentLog(incident_bot.database).get(1).status == "open"


def test_lead_status_updates_severity_and_follow_ups_show_in_the_top_message_thread_and_log(incident_bot,
                                                                                           fake_slack):
    send(incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    slash(incident_bot, fake_slack, "incident lead 1 <@UBOB|bob>")
    assert ephemeral_answers(fake_slack, 1)[0] == "<@UBOB> leads incident #1 now."
    # Each command is answered on its own thread through its response_url, so answers to commands sent at once may
    # arrive in any order (as in Slack); the user here reads each answer before typing the next command.
    slash(incident_bot, fake_slack, "incident status 1 mitigated traffic moved to the standby cluster")
    assert ephemeral_answers(fake_slack, 2)[1] == "Incident #1: Mitigated."
    slash(incident_bot, fake_slack, "incident severity 1 warning")
    assert ephemeral_answers(fake_slack, 3)[2] == "Incident #1 is warning now."
    slash(incident_bot, fake_slack, "incident followup 1 alert on sidecar memory before it OOMs")
    assert ephemeral_answers(fake_slack, 4)[3] == (
        "Follow-up recorded on incident #1; `meshbot incidents postmortem 1` lists it.")
    owner = last_update(fake_slack, top, contains="WARNING")["blocks"][0]["text"]["text"]
    assert "*Lead:* <@UBOB> \u00b7 *Status:* *Mitigated*: traffic moved to the standby cluster" in owner
    assert owner.startswith(":warning: *WARNING \u00b7 EnvoySidecarCrashLoop")
    said = [m["text"] for m in thread(fake_slack, top)]
    assert "Mitigated: traffic moved to the standby cluster (<@UALICE>)" in said
    kinds = [e.kind for e in IncidentLog(incident_bot.database).timeline(1)]
    assert {"lead_set", "stage_changed", "severity_changed", "follow_up"} <= set(kinds)


def test_the_top_message_is_at_most_ten_lines_and_the_triage_reply_at_most_twenty(incident_bot, fake_slack):
    send(incident_bot, istiod_down())
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    triage = wait_for_diagnostics(fake_slack, top)
    updated = last_update(fake_slack, top, contains="Probable cause")
    assert rendered_lines(Message(updated["text"], updated["blocks"])) <= 10
    assert rendered_lines(Message(triage["text"], triage["blocks"])) <= 20
    text = str(triage["blocks"])
    assert text.count("MB1002") == 1, "each finding once"
    assert "*Fix:*" not in text


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


def test_export_is_a_postmortem_ready_timeline_in_markdown_and_json(sqlite_incident_bot, fake_slack):
    send(sqlite_incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    send(sqlite_incident_bot, payload("resolved.json"))
    fake_slack.wait_for(lambda: [c for c in fake_slack.of("chat.update") if c.args["text"].startswith("RESOLVED")],
                        what="the resolution")
    db = sqlite_incident_bot.settings.db_path
    markdown = meshbot_cli("incidents", "--db", db, "export", "1", "--format", "md")
    assert markdown.returncode == 0, markdown.stderr
    text = markdown.stdout
    assert text.startswith("# Incident #1: EnvoySidecarCrashLoop")
    for expected in ("## Alerts", "## Findings", "## Timeline", "Diagnosis (playbook `envoy-sidecar-crash-loop`): ",
                     "| Firing since | 2024-05-14 09:12:00 UTC |", "| Duration | 19m (from the first alert's startsAt) |",
                     "Posted in Slack: ", "Resolved: all alerts of the group resolved"):
        assert expected in text, expected
    assert "(ts " not in text and "{'" not in text, "no Slack timestamps, no Python dicts"
    exported = json.loads(meshbot_cli("incidents", "--db", db, "export", "1", "--format", "json").stdout)
    kinds = [e["kind"] for e in exported["events"]]
    assert kinds[0] == "incident_opened" and "diagnostics_run" in kinds and kinds[-1] in ("state_changed",
                                                                                      "message_posted")
    listing = meshbot_cli("incidents", "--db", db, "list", "--all")
    assert "#1" in listing.stdout and "resolved" in listing.stdout


def test_postmortem_draft_tells_what_happened_when_who_decided_and_how_long_it_took(sqlite_incident_bot,
                                                                                     fake_slack):
    send(sqlite_incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    slash(sqlite_incident_bot, fake_slack, "incident lead 1 <@UBOB|bob>")
    slash(sqlite_incident_bot, fake_slack, "incident status 1 mitigated payment scaled out on the old nodes")
    slash(sqlite_incident_bot, fake_slack, "incident followup 1 cap sidecar memory per namespace")
    ephemeral_answers(fake_slack, 3)
    send(sqlite_incident_bot, payload("resolved.json"))
    fake_slack.wait_for(lambda: [c for c in fake_slack.of("chat.update") if c.args["text"].startswith("RESOLVED")],
                        what="the resolution")
    draft = meshbot_cli("incidents", "--db", sqlite_incident_bot.settings.db_path, "postmortem", "1")
    assert draft.returncode == 0, draft.stderr
    text = draft.stdout
    assert text.startswith("# Postmortem draft: incident #1 \u2014 EnvoySidecarCrashLoop")
    for expected in ("| Lead | @UBOB |", "| Time to resolve | 19m", "## What happened when", "## Who approved what",
                     "## What changed", "- [ ] cap sidecar memory per namespace (@UALICE, ",
                     "Mitigated: payment scaled out on the old nodes (@UALICE).", "meshbot's probable cause: "):
        assert expected in text, expected
    assert "| Time to mitigate | \u2014 |" not in text, "mitigation was recorded, so its time is known"


def test_verify_detects_an_edited_event(sqlite_incident_bot, fake_slack):
    send(sqlite_incident_bot, payload("firing.json"))
    fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    db = sqlite_incident_bot.settings.db_path
    assert meshbot_cli("incidents", "--db", db, "verify").returncode == 0
    sqlite_incident_bot.stop()
    import sqlite3

    connection = sqlite3.connect(db)
    connection.execute("DROP TRIGGER events_no_update")  # what an attacker with file access could do
    connection.execute("UPDATE events SET actor = 'mallory' WHERE id = 2")
    connection.commit()
    connection.close()
    result = meshbot_cli("incidents", "--db", db, "verify")
    assert result.returncode == 1
    assert "event 2: content does not match its hash" in result.stderr


# -- the bundled outage: triage at the top, one conversation ---------------------------------------

def test_top_message_carries_the_probable_cause_impact_first_step_runbook_and_firing_since_starts_at(
        incident_bot, fake_slack):
    send(incident_bot, high_error_rate())
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    update = last_update(fake_slack, top, contains="Probable cause")
    shown = update["blocks"][0]["text"]["text"]
    assert shown.startswith(":rotating_light: *CRITICAL \u00b7 ServiceMeshHighErrorRate")
    assert "|2026-11-24 02:58 UTC>" in shown, "firing since the alert's startsAt, not when meshbot received it"
    assert '*Probable cause* (high confidence): Mesh root CA "CN=Istio CA,O=cluster.local" expired' in shown
    assert "expired" in shown and " \u2014 explains " in shown, "the impact on the cause's line"
    assert "*First step:* Restore traffic in prod first" in shown
    [button] = [e for b in update["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert button["action_id"] == "remediation_request:0" and button["value"] == "1:0"
    assert button["text"]["text"] == "Request: /mesh permissive-mtls prod"
    text = str(update["blocks"])
    assert rendered_lines(Message(update["text"], update["blocks"])) <= 10, "the alert's description gives way first"
    assert "<https://github.com/example/meshbot/blob/main/playbooks/service-mesh-high-error-rate.yaml|Runbook>" in text
    assert update["text"].startswith("CRITICAL: ServiceMeshHighErrorRate") and "probable cause: Mesh root CA" in \
        update["text"]


def test_first_reply_is_the_triage_with_findings_under_their_cause_and_the_rest_summarised(
        incident_bot, fake_slack):
    send(incident_bot, high_error_rate())
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    triage_reply = wait_for_diagnostics(fake_slack, top)
    assert replies(fake_slack, top)[0]["_ts"] == triage_reply["_ts"], "the triage is the first reply"
    sections = [b["text"]["text"] for b in triage_reply["blocks"] if b["type"] == "section"]
    [causes] = [t for t in sections if t.startswith("*Probable causes*, what the other steps wait on first")]
    assert "\n*1. Mesh root CA" in causes and "explains " in causes
    text = str(triage_reply["blocks"])
    assert "`MB1011`" not in text, "what a cause explains is counted here and listed once, in the attached report"
    assert "the full report is attached below as a file, each finding once" in text
    assert "permissive-mtls istio-system" not in text, "suggestions take their namespace from the finding"
    assert ":red_circle: 0" not in text


def test_findings_outside_the_alerts_scope_are_summarised_not_listed(incident_bot, fake_slack):
    send(incident_bot, istiod_down())
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    text = str(wait_for_diagnostics(fake_slack, top)["blocks"])
    assert "`MB3010`" not in text, "the root mismatch in legacy is outside an istio-system alert's scope"
    assert "findings elsewhere (`legacy`" in text
    assert fake_slack.wait_for(lambda: fake_slack.of("files.completeUploadExternal"), what="the full report")


def test_a_group_firing_during_a_diagnosed_outage_with_its_cause_joins_its_thread_with_no_post_of_its_own(
        incident_bot, fake_slack):
    send(incident_bot, istiod_down())
    [first] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the first incident")
    wait_for_diagnostics(fake_slack, first)
    send(incident_bot, high_error_rate())
    waiting = fake_slack.wait_for(lambda: [m for m in replies(fake_slack, first) if "fired too" in m["text"]],
                                  what="the second group's waiting note in the first thread")[0]
    assert "diagnosing whether it is part of this outage" in waiting["text"]
    joined = joined_note(fake_slack, first)
    assert joined["_ts"] == waiting["_ts"], "the waiting note becomes the join note: one reply, not two"
    assert "ServiceMeshHighErrorRate" in joined["text"] and "Mesh root CA" in joined["text"]
    counted = last_update(fake_slack, first, contains="1 more alert group joined (#2)")
    assert "incident #1" in counted["blocks"][0]["text"]["text"]
    quiesce(incident_bot)
    assert len(top_levels(fake_slack)) == 1, "one top-level post per outage"
    assert not [m for m in fake_slack.messages() if m["text"].startswith("Triage \u00b7 incident #2")], \
        "no second full diagnosis"


def test_a_group_with_another_cause_gets_its_own_post_once_its_diagnosis_says_so(incident_bot, fake_slack):
    send(incident_bot, istiod_down())
    [first] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the first incident")
    wait_for_diagnostics(fake_slack, first)
    send(incident_bot, payload("firing.json"))
    second = fake_slack.wait_for(lambda: top_levels(fake_slack)[1:], timeout=20, what="the separate post")[0]
    assert "incident #2" in second["text"]
    wait_for_diagnostics(fake_slack, second)
    quiesce(incident_bot)
    [note] = [m for m in as_shown(fake_slack, replies(fake_slack, first)) if "incident #2" in m["text"]]
    assert "is a separate problem" in note["text"]
    assert len(top_levels(fake_slack)) == 2


def test_a_joined_group_resolving_says_so_in_the_conversation_it_joined(incident_bot, fake_slack):
    send(incident_bot, istiod_down())
    [first] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the first incident")
    wait_for_diagnostics(fake_slack, first)
    rate = high_error_rate()
    send(incident_bot, rate)
    joined_note(fake_slack, first)
    rate["status"] = rate["alerts"][0]["status"] = "resolved"
    rate["alerts"][0]["endsAt"] = "2026-11-24T04:10:00Z"
    send(incident_bot, rate)
    note = fake_slack.wait_for(lambda: [m for m in replies(fake_slack, first) if "lasted" in m["text"]],
                               what="the resolution in the joined thread")[0]
    assert "lasted 1h 12m" in note["text"]
    quiesce(incident_bot)
    assert len(top_levels(fake_slack)) == 1


def test_a_resolved_outage_resolves_the_incidents_that_joined_it_and_says_which(incident_bot, fake_slack):
    send(incident_bot, istiod_down())
    [first] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the first incident")
    wait_for_diagnostics(fake_slack, first)
    send(incident_bot, high_error_rate())
    joined_note(fake_slack, first)
    down = istiod_down()
    down["status"] = down["alerts"][0]["status"] = "resolved"
    down["alerts"][0]["endsAt"] = "2026-11-24T04:10:00Z"
    send(incident_bot, down)
    note = fake_slack.wait_for(lambda: [m for m in replies(fake_slack, first) if "Also resolved" in m["text"]],
                               what="the linked incidents named in the outage's thread")[0]
    assert note["text"] == "Also resolved with incident #1: #2 (part of the same outage)"
    quiesce(incident_bot)
    statuses = {row["id"]: (row["status"], row["resolved_by"])
                for row in incident_bot.database.db.query("SELECT id, status, resolved_by FROM incidents")}
    assert statuses == {1: ("resolved", "alertmanager"), 2: ("resolved", "meshbot")}


def test_a_diagnosis_typed_during_an_open_incident_answers_in_its_thread(incident_bot, fake_slack):
    send(incident_bot, istiod_down())
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    slash(incident_bot, fake_slack, "status istio-system")
    told = ephemeral_answers(fake_slack, 1)[0]
    assert told.startswith("Answering in the thread of incident #1, which is open about `istio-system`")
    fake_slack.wait_for(lambda: [m for m in thread(fake_slack, top) if m["text"].startswith("status \u00b7 ")],
                        what="the findings in the incident's thread")
    quiesce(incident_bot)
    assert len(top_levels(fake_slack)) == 1, "one top-level post per outage"
    assert any(m["text"].startswith("Running status for istio-system") for m in thread(fake_slack, top))


def test_incident_show_says_when_in_date_time_and_zone_who_as_a_mention_and_what_in_words(incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    slash(incident_bot, fake_slack, "incident resolve 1 fixed by hand", user="UBOB")
    ephemeral_answers(fake_slack, 1)
    slash(incident_bot, fake_slack, "incident show 1")
    shown = ephemeral_answers(fake_slack, 2)[1]
    lines = shown.splitlines()
    assert lines[0].startswith("*Incident #1* [critical] EnvoySidecarCrashLoop") and "resolved, lasted" in lines[0]
    assert all(re.match(r"<!date\^\d+\^\{date_num\} \{time_secs\}\|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC> \u00b7 ",
                        line) for line in lines[1:]), lines
    assert "Alertmanager: Alert EnvoySidecarCrashLoop firing since 2024-05-14 09:12 UTC" in shown
    assert "Diagnosis (playbook `envoy-sidecar-crash-loop`): " in shown and "{'" not in shown
    assert "<@UBOB>: Resolved: resolved by <@UBOB> in Slack" in shown
    assert "&lt;@" not in shown and "Posted in Slack" not in shown and "(ts " not in shown


def test_an_open_incidents_top_message_is_re_rendered_so_its_elapsed_time_stays_current(incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    last_update(fake_slack, top, contains="Probable cause")
    before = len([c for c in fake_slack.of("chat.update") if c.args.get("ts") == top["_ts"]])
    assert incident_bot.incident_flow.refresh_open_tops(every=0) == 1
    fake_slack.wait_for(lambda: len([c for c in fake_slack.of("chat.update") if c.args.get("ts") == top["_ts"]])
                        > before, what="the refreshed top message")


# -- suggestions take their namespace from the finding ---------------------------------------------

def permissive_for_root_mismatch():
    from bot.incidents.playbooks import Playbook, RemediationRule

    rule = RemediationRule(codes=("MB3010",), action="permissive-mtls {namespace}", title="Switch to permissive",
                           advice=None, namespace_label="destination_service_namespace")
    return Playbook(name="p", description="", alertname="A", matchers=(), diagnostics=(), remediations=(rule,),
                    fallback=False, source="test")


def test_a_suggestion_takes_its_namespace_from_the_finding_not_from_the_alert_label():
    from bot.incidents.playbooks import suggest
    from commands import codes

    mismatch = codes.finding("MB3010", origin="ConfigMap legacy/istio-ca-root-cert", namespace="legacy",
                             expected="0C:D9")
    [suggestion] = suggest(permissive_for_root_mismatch(), [mismatch],
                           {"destination_service_namespace": "istio-system"})
    assert suggestion.action == "permissive-mtls legacy"


def test_a_finding_about_no_namespace_falls_back_to_the_alert_label():
    from dataclasses import replace

    from bot.incidents.playbooks import suggest
    from commands import codes

    mesh_wide = replace(codes.finding("MB3010", origin="ConfigMap legacy/istio-ca-root-cert", namespace="legacy",
                                      expected="0C:D9"), origin="Mesh")
    [suggestion] = suggest(permissive_for_root_mismatch(), [mesh_wide], {"destination_service_namespace": "prod"})
    assert suggestion.action == "permissive-mtls prod"


def test_joining_keeps_the_independent_causes_the_new_group_found(incident_bot, fake_slack):
    send(incident_bot, high_error_rate())  # as in the story: the error rate pages first
    [first] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the first incident")
    wait_for_diagnostics(fake_slack, first)
    send(incident_bot, istiod_down())
    text = joined_note(fake_slack, first)["blocks"][0]["text"]["text"]
    assert "It also found: istiod container discovery in istio-system/istiod-5d8f7c9b6-qx7wz was OOMKilled" in text
    assert "*First step:* istiod runs out of memory: raise its memory limit" in text


def test_with_a_captured_scenario_incidents_are_timed_by_the_scenarios_clock_like_its_findings(incident_bot,
                                                                                                fake_slack):
    send(incident_bot, payload("firing.json"))
    fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    [opened] = incident_bot.database.db.execute("SELECT opened_at FROM incidents").fetchone()
    # examples/demo/scenario.yaml is frozen at 2026-11-24 03:07 UTC; the bot's clock moves on from there.
    assert opened.startswith("2026-11-24T03:0"), opened


def test_an_incident_resolved_by_hand_is_reopened_when_alertmanager_repeats_the_still_firing_alert(
        incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    slash(incident_bot, fake_slack, "incident resolve 1 looks fixed, the alert lags", user="UBOB")
    fake_slack.wait_for(lambda: [m for m in thread(fake_slack, top) if "resolved by <@UBOB>" in m["text"]],
                        what="the hand resolve in the thread")
    send(incident_bot, payload("firing.json"))  # Alertmanager's repeat_interval re-sends the firing group
    fake_slack.wait_for(lambda: [m for m in thread(fake_slack, top) if m["text"].startswith("Reopened")],
                        what="the reopen note in the thread")
    [status] = incident_bot.database.db.execute("SELECT status FROM incidents WHERE id = 1").fetchone()
    assert status == "open"
    assert len(top_levels(fake_slack)) == 1, "reopened in place, not a second incident"


def test_an_incident_alertmanager_resolved_stays_closed_when_a_late_firing_copy_arrives(incident_bot, fake_slack):
    send(incident_bot, payload("firing.json"))
    fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    send(incident_bot, payload("resolved.json"))
    incident_bot.incident_flow.process_pending()
    send(incident_bot, payload("firing.json"))  # a retry of the old firing notification, delivered late
    incident_bot.incident_flow.process_pending()
    [status] = incident_bot.database.db.execute("SELECT status FROM incidents WHERE id = 1").fetchone()
    assert status == "resolved"
    assert incident_bot.database.db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0] == 1
