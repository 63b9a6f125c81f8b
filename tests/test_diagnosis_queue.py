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
