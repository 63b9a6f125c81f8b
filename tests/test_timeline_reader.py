"""Where the bot's timeline comes from: captured answers centred on their moment, a scenario with none, and a
diagnosis that never waits longer than the reads' own timeouts."""

from __future__ import annotations

import time
from concurrent.futures import Future
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bot.cluster import ClusterAccess
from bot.settings import Settings
from bot.timeline.reader import TimelineReader

ROOT = Path(__file__).resolve().parents[1]
MOMENT = datetime(2026, 11, 24, 3, 7, tzinfo=timezone.utc)
"""examples/demo/scenario.yaml's moment: its captured answers are frozen there."""


def _reader(**environ: str) -> TimelineReader:
    settings = Settings.load(environ={"MESHBOT_SCENARIO": str(ROOT / "examples/demo/scenario.yaml"), **environ})
    return TimelineReader(settings, ClusterAccess(settings), lambda: MOMENT)


def test_an_alert_near_the_captures_moment_centres_the_window_and_one_hours_away_does_not():
    near = _reader().read(at=MOMENT - timedelta(minutes=9), namespaces=["prod"])
    far = _reader().read(at=MOMENT + timedelta(days=400), namespaces=["prod"])

    assert near.at == MOMENT - timedelta(minutes=9)
    assert far.at == MOMENT
    assert far.onset == datetime(2026, 11, 24, 2, 41, tzinfo=timezone.utc)


def test_a_scenario_without_captured_telemetry_reads_an_empty_timeline(tmp_path):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text((ROOT / "examples/demo/scenario.yaml").read_text())
    settings = Settings.load(environ={"MESHBOT_SCENARIO": str(scenario)})
    reader = TimelineReader(settings, ClusterAccess(settings), lambda: MOMENT)

    timeline = reader.read(at=MOMENT, namespaces=["prod"])

    assert timeline.empty
    assert reader.source == "a scenario with no captured telemetry"


def test_a_diagnosis_waits_for_its_timeline_no_longer_than_the_reads_timeouts():
    reader = _reader(MESHBOT_KUBE_TIMEOUT="0.01", MESHBOT_PROMETHEUS_TIMEOUT="0.01")
    never: Future = Future()

    started = time.monotonic()
    assert reader.finished(never) is None
    assert time.monotonic() - started < 2.0
    assert reader.budget() == 12 * 0.01 + 8 * 0.01
