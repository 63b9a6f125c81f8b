"""``meshbot serve`` with a database file it cannot use ends with one line naming the file and the fix, and
the settings exit code (78) — not a traceback.  Real files, a real ``python -m bot.cli serve`` process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.server.schema import open_database

ROOT = Path(__file__).resolve().parent.parent
EXIT_CONFIG = 78
NOBODY = 65534


def serve_env(db_path: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxb-test-not-a-secret",
            "SLACK_SIGNING_SECRET": "test-signing-secret", "MESHBOT_CHANNEL": "C0123ABCD",
            "SLACK_API_URL": "http://127.0.0.1:9/", "MESHBOT_DB": str(db_path), "MESHBOT_PORT": "0",
            "MESHBOT_AUDIT_KEY": "0123456789abcdef0123456789abcdef", "MESHBOT_REMINDERS": "false"}


def serve(db_path: Path, *, as_user: int | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bot.cli", "serve"]
    if as_user is not None:
        command = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=serve_env(db_path), timeout=60)


def healthy_database(path: Path) -> bytes:
    database = open_database(path)
    database.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, as after a clean stop
    database.close()
    return path.read_bytes()


def assert_one_line_naming_the_file(result: subprocess.CompletedProcess, path: Path, fix: str) -> None:
    assert result.returncode == EXIT_CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"MESHBOT_DB {path}" in lines[0] and fix in lines[0]


def test_a_corrupted_database_file_is_one_line_with_the_settings_exit_code(tmp_path):
    db_path = tmp_path / "meshbot.db"
    db_path.write_bytes(b"not an sqlite file " * 500)

    result = serve(db_path)

    assert_one_line_naming_the_file(result, db_path, "restore it from a backup, or move it aside")
    assert "file is not a database" in result.stderr


@pytest.mark.parametrize("keep", [50, 4096])
def test_a_truncated_database_file_is_one_line_with_the_settings_exit_code(tmp_path, keep):
    db_path = tmp_path / "meshbot.db"
    db_path.write_bytes(healthy_database(tmp_path / "whole.db")[:keep])

    result = serve(db_path)

    assert_one_line_naming_the_file(result, db_path, "restore it from a backup, or move it aside")
    assert "database disk image is malformed" in result.stderr


@pytest.fixture
def read_only_database() -> Iterator[tuple[Path, int | None]]:
    """A healthy database meshbot's user may read but not write (nor its directory).  Root writes anyway,
    so as root the server runs as nobody (setpriv), like a pod with runAsUser and a read-only volume."""
    directory = Path(tempfile.mkdtemp(prefix="meshbot-ro-", dir="/tmp"))
    try:
        db_path = directory / "meshbot.db"
        healthy_database(db_path)
        db_path.chmod(0o444)
        directory.chmod(0o555)
        yield db_path, (NOBODY if os.geteuid() == 0 else None)
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)


def test_a_read_only_database_file_is_one_line_with_the_settings_exit_code(read_only_database):
    db_path, user = read_only_database

    result = serve(db_path, as_user=user)

    assert_one_line_naming_the_file(result, db_path, "make the file and its directory writable")
    assert "attempt to write a readonly database" in result.stderr


def test_a_healthy_database_is_opened_and_brought_to_the_current_schema(tmp_path):
    data = healthy_database(tmp_path / "meshbot.db")
    assert data.startswith(b"SQLite format 3\x00")
    assert open_database(tmp_path / "meshbot.db").migrate() >= 6
