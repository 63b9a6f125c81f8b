"""Faults of the embedded SQLite backend: a second process on the same file, and the file deleted or replaced
under a running meshbot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.slack import BOT_TOKEN, SIGNING_SECRET

ROOT = Path(__file__).resolve().parents[1]


def serve_on(db_path: Path, fake_slack) -> subprocess.CompletedProcess:
    """``meshbot serve`` as a container runs it, on ``db_path``; returns once it exits (a refusal exits at once)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(db_path.parent),
           "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": fake_slack.api_url,
           "MESHBOT_HOST": "127.0.0.1", "MESHBOT_PORT": "0", "MESHBOT_DB": str(db_path), "MESHBOT_REMINDERS": "false"}
    return subprocess.run([sys.executable, "-m", "bot.cli", "serve"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_second_process_on_the_same_sqlite_file_is_refused_with_one_line_naming_the_holder(
        bot_factory, fake_slack, tmp_path):
    running = bot_factory()
    second = serve_on(Path(running.settings.db_path), fake_slack)
    assert second.returncode == 78, second.stderr[-2000:]
    assert f"in use by another meshbot process (pid {os.getpid()}" in second.stderr
    assert httpx.get(f"{running.url}/readyz").status_code == 200  # the first one is untouched


def test_readiness_fails_once_the_database_file_is_deleted(bot_factory, tmp_path):
    meshbot = bot_factory()
    assert httpx.get(f"{meshbot.url}/readyz").status_code == 200
    Path(meshbot.settings.db_path).unlink()  # still open through its old inode: writes would go nowhere lasting
    answer = httpx.get(f"{meshbot.url}/readyz")
    assert answer.status_code == 503
    assert "was deleted while meshbot ran" in answer.json()["database"]


def test_readiness_fails_once_the_database_file_is_replaced(bot_factory, tmp_path):
    meshbot = bot_factory()
    path = Path(meshbot.settings.db_path)
    replacement = tmp_path / "other.db"
    replacement.write_bytes(path.read_bytes())
    replacement.replace(path)
    answer = httpx.get(f"{meshbot.url}/readyz")
    assert answer.status_code == 503 and "was replaced while meshbot ran" in answer.json()["database"]
