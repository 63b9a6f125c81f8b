"""The real meshbot server on a free port, talking to the fake Slack: ``bot_factory(**settings)``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.server.meshbot import Meshbot
from bot.server.wiring import build
from bot.settings import Settings
from tests.support.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack

DEMO_SCENARIO = str(Path(__file__).resolve().parents[2] / "examples" / "demo" / "scenario.yaml")


def bot_settings(fake_slack: FakeSlack, tmp_path: Path, **overrides) -> Settings:
    values = dict(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET, slack_api_url=fake_slack.api_url,
                  host="127.0.0.1", port=0, db_path=str(tmp_path / "meshbot.db"), scenario=DEMO_SCENARIO,
                  workers=8, http_threads=8, reminders=False, responders=("UALICE", "UBOB"))
    # Reminder scans post on their own at start-up; only the reminder tests turn them on.
    # UALICE and UBOB, who type the tests' commands, are on call (MESHBOT_RESPONDERS); tests/
    # test_http_hardening.py proves who else is refused.
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def bot_factory(fake_slack: FakeSlack, tmp_path: Path) -> Iterator[Callable[..., Meshbot]]:
    started: list[Meshbot] = []

    def start(**overrides) -> Meshbot:
        meshbot = build(bot_settings(fake_slack, tmp_path, **overrides)).start()
        started.append(meshbot)
        return meshbot

    yield start
    for meshbot in started:
        meshbot.stop(timeout=5)


@pytest.fixture
def meshbot(bot_factory) -> Meshbot:
    """A bot diagnosing the bundled demo scenario."""
    return bot_factory()
