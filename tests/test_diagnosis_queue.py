"""Back-pressure seen from Slack: a diagnosis beyond the cap says in its thread how many are ahead of it."""

from __future__ import annotations

from pathlib import Path

from bot.diagnosis import MAX_RUNNING_DIAGNOSES
from bot.server.wiring import build
from tests.support.bot import bot_settings
from tests.support.diagnosis_gate import DiagnosisGate
from tests.support.slack import FakeSlack, post_signed, slash_command_body

# Five different diagnoses of prod (different checks are different runs; identical ones would share one).
COMMANDS = ["status prod", "certs prod", "envoy prod", "analyze prod", "proxy-status prod"]


def test_a_diagnosis_beyond_the_cap_says_in_its_thread_how_many_are_ahead(fake_slack: FakeSlack, tmp_path: Path):
    assert MAX_RUNNING_DIAGNOSES == len(COMMANDS) - 1
    gate = DiagnosisGate()
    meshbot = build(bot_settings(fake_slack, tmp_path), runner=gate).start()
    try:
        for text in COMMANDS[:-1]:
            post_signed(f"{meshbot.url}/slack/events", slash_command_body(text, response_url=fake_slack.response_url()))
        fake_slack.wait_for(lambda: len(gate.started) == MAX_RUNNING_DIAGNOSES, what="four diagnoses running")
        post_signed(f"{meshbot.url}/slack/events",
                    slash_command_body(COMMANDS[-1], response_url=fake_slack.response_url()))

        [top] = fake_slack.wait_for(
            lambda: [m for m in fake_slack.messages(top_level=True) if "proxy-status" in m["text"]], what="Running…")
        [note] = fake_slack.wait_for(lambda: fake_slack.messages(thread_ts=top["_ts"]), what="the queued note")
        assert "Queued behind 4 diagnoses" in note["text"]
    finally:
        gate.release.set()
        meshbot.stop(timeout=10)


def test_an_alert_storms_incidents_wait_for_their_turn_without_holding_workers_and_say_so(fake_slack: FakeSlack,
                                                                                       tmp_path: Path):
    from tests.test_incidents import TOKEN, outage_alert, send

    gate = DiagnosisGate()
    meshbot = build(bot_settings(fake_slack, tmp_path, alertmanager_token=TOKEN, channel="CINCIDENT", workers=2,
                                 max_diagnoses=1), runner=gate).start()
    names = [f"StormAlert{number}" for number in range(4)]
    try:
        for number, name in enumerate(names):
            assert send(meshbot, outage_alert(name, {"namespace": "prod", "severity": "warning"}, {"summary": name},
                                              "2026-11-24T03:00:00Z", f"{number:016x}")).status_code == 200
        tops = fake_slack.wait_for(lambda: len(fake_slack.messages(top_level=True)) == len(names)
                                   and fake_slack.messages(top_level=True), what="four incident messages")
        fake_slack.wait_for(lambda: len(gate.started) == 1, what="the first incident's first step running")
        notes = fake_slack.wait_for(
            lambda: [m for top in tops for m in fake_slack.messages(thread_ts=top["_ts"])
                     if "Queued behind" in m["text"]] if sum(
                "Queued behind" in m["text"] for top in tops for m in fake_slack.messages(thread_ts=top["_ts"])) == 3
            else None, timeout=20, what="a queued note in each of the three waiting incidents' threads")
        assert {note["text"].split(";")[0] for note in notes} == {
            ":hourglass_flowing_sand: Queued behind 1 diagnosis", ":hourglass_flowing_sand: Queued behind 2 diagnoses",
            ":hourglass_flowing_sand: Queued behind 3 diagnoses"}
        # One worker runs the held diagnosis; the three waiting incidents hold none, so the other one is free.
        assert meshbot.services.workers.submit(lambda: "free").result(timeout=5) == "free"
        assert len(gate.started) == 1, "at most one diagnosis at once (MESHBOT_MAX_DIAGNOSES=1)"
        gate.release.set()
        fake_slack.wait_for(lambda: sum(m["text"].startswith("Triage") for top in tops
                                        for m in fake_slack.messages(thread_ts=top["_ts"])) == len(names),
                            timeout=30, what="every incident's triage")
    finally:
        gate.release.set()
        meshbot.stop(timeout=10)


def test_a_diagnosis_that_ends_while_meshbot_stops_still_queues_its_report(fake_slack: FakeSlack, tmp_path: Path):
    import json
    import threading

    from bot.storage.database import Database

    gate = DiagnosisGate()
    meshbot = build(bot_settings(fake_slack, tmp_path), runner=gate).start()
    db_path = meshbot.settings.db_path
    try:
        post_signed(f"{meshbot.url}/slack/events", slash_command_body("status prod",
                                                                      response_url=fake_slack.response_url()))
        fake_slack.wait_for(lambda: gate.started == ["prod"], what="the diagnosis running")
        stopping = threading.Thread(target=meshbot.stop, kwargs={"timeout": 20})
        stopping.start()
        # The worker pool now takes nothing new; the running diagnosis ends while it drains.
        fake_slack.wait_for(lambda: meshbot.services.workers._shutdown or None, what="the pool draining")
        gate.release.set()
        stopping.join(30)
        assert not stopping.is_alive()
    finally:
        gate.release.set()
        meshbot.stop(timeout=10)
    rows = Database(db_path, []).db.execute("SELECT op, payload FROM outbox").fetchall()
    texts = [json.loads(payload).get("text", "") for op, payload in rows]
    assert any("status \u00b7 prod" in text for text in texts), texts  # the findings, sent or kept for the next start
