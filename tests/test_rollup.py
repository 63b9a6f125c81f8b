"""Roll-up: beyond MESHBOT_ROLLUP_PER_MINUTE new incidents a minute in a channel, one message lists the rest.

Real Alertmanager webhooks over HTTP into a started bot, the fake Slack Web API, the incident log.  Diagnoses are
held (the runner ``build`` takes waits) so no incident is diagnosed during the storm: that is when new groups
would otherwise each open a top-level post (a diagnosed open incident gathers them in its thread instead)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence

import pytest

from bot.incidents.rollup import ROLLED_UP
from bot.server.meshbot import Meshbot
from bot.server.wiring import build
from commands.findings import Finding
from tests.support.bot import bot_settings, quiesce
from tests.support.slack import FakeSlack
from tests.test_incidents import TOKEN, as_shown, payload, send

PER_MINUTE = 3


def storm_group(n: int, severity: str = "warning") -> dict:
    """One alert group of the storm: its own alertname, namespace and fingerprint."""
    body = copy.deepcopy(payload("firing.json"))
    name, namespace = f"MeshStorm{n}", f"team-{n}"
    body["groupKey"] = f'{{}}:{{alertname="{name}", namespace="{namespace}"}}'
    body["groupLabels"] = {"alertname": name, "namespace": namespace}
    body["commonLabels"] = {**body["commonLabels"], "alertname": name, "namespace": namespace, "severity": severity}
    body["commonAnnotations"] = {"summary": f"storm group {n}"}
    body["alerts"] = [body["alerts"][0]]
    alert = body["alerts"][0]
    alert["labels"] = {**alert["labels"], "alertname": name, "namespace": namespace, "severity": severity}
    alert["fingerprint"] = f"{n:016x}"
    return body


class HeldDiagnoses:
    """The diagnosis runner: every diagnosis waits until ``release`` (a storm's backlog), then finds nothing."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def __call__(self, checks: Sequence[str], namespace: str | None, pods: Sequence[object] = ()) -> list[Finding]:
        self.gate.wait(60)
        return []


@pytest.fixture
def storm_bot(fake_slack: FakeSlack, tmp_path) -> Iterator[tuple[Meshbot, HeldDiagnoses]]:
    held = HeldDiagnoses()
    meshbot = build(bot_settings(fake_slack, tmp_path, alertmanager_token=TOKEN, channel="CINCIDENT",
                                 rollup_per_minute=PER_MINUTE), runner=held).start()
    yield meshbot, held
    held.gate.set()
    meshbot.stop(timeout=5)


def storm_posts(fake_slack: FakeSlack) -> list[dict]:
    return as_shown(fake_slack, [m for m in fake_slack.messages(top_level=True)
                                 if "MeshStorm" in m["text"] or "Roll-up" in m["text"]])


def rollup_text(fake_slack: FakeSlack) -> str:
    """The roll-up message's list as Slack shows it now (its latest update)."""
    found = [p for p in storm_posts(fake_slack) if p["text"].startswith("Roll-up")]
    return found[0]["blocks"][0]["text"]["text"] if found else ""


def test_beyond_the_limit_a_minute_new_incidents_share_one_roll_up_and_a_critical_one_still_gets_its_own_post(
        storm_bot, fake_slack: FakeSlack):
    meshbot, held = storm_bot
    for n in range(1, 7):
        assert send(meshbot, storm_group(n)).status_code == 200
    assert send(meshbot, storm_group(7, severity="critical")).status_code == 200

    incidents = meshbot.services.incidents
    fake_slack.wait_for(lambda: len(incidents.list_open()) == 7, timeout=20, what="seven incidents")
    fake_slack.wait_for(lambda: len(storm_posts(fake_slack)) == 5, timeout=20,
                        what="three incident posts, one roll-up and the critical one's post")
    posts = storm_posts(fake_slack)
    rollups = [p for p in posts if p["text"].startswith("Roll-up")]
    assert len(rollups) == 1, [p["text"] for p in posts]
    own = [p for p in posts if not p["text"].startswith("Roll-up")]
    assert sorted(t for p in own for t in ("MeshStorm1", "MeshStorm2", "MeshStorm3", "MeshStorm7")
                  if t in p["text"]) == ["MeshStorm1", "MeshStorm2", "MeshStorm3", "MeshStorm7"]

    # The roll-up lists each of the three rolled-up incidents once the last one joined it (updated as they came).
    by_title = {i.title.split(":")[0]: i for i in incidents.list_open()}
    rolled = [by_title[f"MeshStorm{n}"] for n in (4, 5, 6)]
    fake_slack.wait_for(lambda: all(f"#{i.id} warning" in rollup_text(fake_slack) for i in rolled),
                        what="the roll-up listing incidents 4, 5 and 6")
    assert len({i.top_message for i in rolled}) == 1, "one roll-up message is their thread"
    assert by_title["MeshStorm7"].top_message not in {i.top_message for i in rolled}, "critical: never rolled up"
    # Each rolled-up incident keeps its record, and its log says why it has no post of its own.
    for incident in rolled:
        notes = [e for e in incidents.timeline(incident.id) if ROLLED_UP in e.data]
        assert [e.data[ROLLED_UP] for e in notes] == [incident.top_message]

    held.gate.set()  # the backlog of diagnoses ends: their triage goes to the roll-up's thread, no new post
    quiesce(meshbot, timeout=90)  # Slack pacing: about one post a second in the channel
    assert len(storm_posts(fake_slack)) == 5
    assert "3 more new incidents" in rollup_text(fake_slack), "a refresh keeps the list, not one incident's message"
