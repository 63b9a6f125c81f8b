"""The real meshbot server on a free port, talking to the fake Slack: ``bot_factory(**settings)``."""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot.server.meshbot import Meshbot
from bot.server.schema import open_database
from bot.server.wiring import build
from bot.settings import Settings
from tests.support.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack

DEMO_SCENARIO = str(Path(__file__).resolve().parents[2] / "examples" / "demo" / "scenario.yaml")
TEST_HTTP_LOOP_SECONDS = 0.05
"""waitress's loop checks for closed connections this often; at the 1 s default every bot's stop waited ~1 s."""


def bot_settings(fake_slack: FakeSlack | None, tmp_path: Path, **overrides) -> Settings:
    """The tests' settings; without a fake Slack (a bot that is only built, never started) no Slack URL is used."""
    api_url = fake_slack.api_url if fake_slack else "http://127.0.0.1:9/api/"
    db_path = tmp_path / "meshbot.db"
    if "db_path" not in overrides and not overrides.get("database_url") and not db_path.exists():
        shutil.copyfile(_migrated_database(), db_path)
    values = dict(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET, slack_api_url=api_url,
                  host="127.0.0.1", port=0, db_path=str(db_path), scenario=DEMO_SCENARIO,
                  workers=8, http_threads=8, reminders=False, responders=("UALICE", "UBOB"),
                  http_loop_seconds=TEST_HTTP_LOOP_SECONDS)
    # Reminder scans post on their own at start-up; only the reminder tests turn them on.
    # UALICE and UBOB, who type the tests' commands, are on call (MESHBOT_RESPONDERS); tests/
    # test_http_hardening.py proves who else is refused.
    values.update(overrides)
    return Settings(**values)


@functools.cache
def _migrated_database() -> Path:
    """An empty SQLite file at this meshbot's schema, made once per test process; each bot gets a copy.

    Running every migration took ~0.15 s of each of the ~1,000 bot starts (over 1 s each on a loaded CI
    machine); a copy takes a millisecond.  It holds no row and no audit key (each bot still generates its
    own next to its copy), so a bot starts on it exactly as on a fresh file; the migrations themselves are
    proven on fresh and older files by tests/test_wiring.py, test_database_startup.py and test_audit_chain.py."""
    directory = Path(tempfile.mkdtemp(prefix="meshbot-template-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = directory / "meshbot.db"
    open_database(path).close()
    return path


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


@contextlib.contextmanager
def built_bot(tmp_path: Path, **overrides) -> Iterator[Meshbot]:
    """``build()`` on the tests' settings, never started: what it registered, without serving (docs, recipes)."""
    meshbot = build(bot_settings(None, tmp_path, **overrides))
    try:
        yield meshbot
    finally:
        meshbot.stop(timeout=5)


def quiesce(meshbot: Meshbot, timeout: float = 10.0) -> None:
    """Wait until the bot has nothing left to do: both pools drained, no unapplied Alertmanager notification,
    nothing pending in the outbox; raises AssertionError when that does not happen within ``timeout``.

    Tests that prove something did *not* happen call this instead of sleeping: once it returns, whatever the
    request set off has run to the end, so an empty fake Slack means nothing was (or will be) sent.  Two
    quiet rounds in a row are needed because one stage hands work to the next (messenger -> worker ->
    outbox)."""
    deadline = time.monotonic() + timeout
    services = meshbot.services
    quiet_rounds = 0
    while quiet_rounds < 2:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the bot did not settle within {timeout}s "
                                 f"({services.outbox.pending_count()} outbox entries pending)")
        drain(services.messengers, left)
        drain(services.workers, left)
        applied = services.incident_flow.process_pending()
        pending = services.outbox.pending_count()
        if pending:
            services.outbox.wake()
            _poll_pause()
        quiet_rounds = quiet_rounds + 1 if not (applied or pending) else 0


def drain(pool: ThreadPoolExecutor, timeout: float) -> None:
    """Return once every task submitted to ``pool`` before the call has finished.

    One barrier task per thread: the pool's queue is first in, first out, so they start only after the
    earlier tasks were taken, and they meet only once every thread is free (a task still running holds its
    thread).  ``_max_workers`` is the pool's size; ThreadPoolExecutor has no public name for it."""
    size = pool._max_workers
    barrier = threading.Barrier(size + 1)
    for _ in range(size):
        pool.submit(barrier.wait, timeout)
    try:
        barrier.wait(timeout)
    except threading.BrokenBarrierError:
        raise AssertionError(f"a pool still had work running after {timeout:.1f}s") from None


def _poll_pause() -> None:
    # The outbox paces posts (one per second per channel, Slack's chat.postMessage tier); waiting for a
    # paced entry is waiting for a condition that the loop fulfils on its own schedule.
    time.sleep(0.05)


def threads_left(before: set[threading.Thread], *, settle: float = 2.0, ignore: str | None = None) -> list[str]:
    """Threads started since ``before`` still alive after up to ``settle`` seconds (names starting with ``ignore``
    left out).  A fake server's thread for a kept-alive connection ends a moment after the bot closes the
    connection, not at the same instant; a thread nobody ends is still listed."""
    deadline = time.monotonic() + settle
    while True:
        left = sorted(t.name for t in set(threading.enumerate()) - before
                      if t.is_alive() and not (ignore and t.name.startswith(ignore)))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)
