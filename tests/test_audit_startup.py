"""``meshbot serve`` refuses (exit 78) a log signed with a key it was not given, and the key is rotated only by
an explicit command that writes a MAC'd rotation event (issue 24 item 3).  A real ``python -m bot.cli`` process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bot.cli import main
from bot.incidents.anchors import FileAnchorStore
from bot.incidents.audit import AuditKey, audit_key_path
from bot.incidents.log import IncidentLog
from bot.incidents.records import EventKind
from bot.server.schema import open_database
from tests.support.postgres import PASSWORD as PG_PASSWORD
from tests.test_database_startup import EXIT_CONFIG, ROOT, serve_env

KEY = "0123456789abcdef0123456789abcdef"


def keyed_log(path: Path, key: str = KEY, events: int = 3) -> None:
    database = open_database(path)
    log = IncidentLog(database, key=AuditKey(key.encode(), "MESHBOT_AUDIT_KEY"), anchor_stores=())
    for n in range(events):
        log.record(None, "alertmanager", EventKind.NOTE, {"n": n})
    database.close()


def serve(db_path: Path, **overrides: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in {**serve_env(db_path), **overrides}.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "bot.cli", "serve"], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=60)


def test_serve_refuses_with_exit_78_when_keyed_events_exist_and_no_key_is_configured(tmp_path):
    db_path = tmp_path / "meshbot.db"
    keyed_log(db_path)
    result = serve(db_path, MESHBOT_AUDIT_KEY=None)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "holds events signed with an audit key but none is configured" in result.stderr
    assert "Traceback" not in result.stderr
    assert not audit_key_path(db_path).exists(), "the key this start generated signed nothing and is removed"
    with open_database(db_path).transaction() as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 3  # nothing was written


def test_serve_refuses_with_exit_78_a_key_that_is_not_the_logs(tmp_path):
    db_path = tmp_path / "meshbot.db"
    keyed_log(db_path)
    result = serve(db_path, MESHBOT_AUDIT_KEY="f" * 32)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "wrong audit key: this log is signed with the key whose check value is" in result.stderr


def test_rotate_key_writes_a_rotation_event_and_verify_names_both_keys(tmp_path, monkeypatch, capsys):
    db_path = tmp_path / "meshbot.db"
    keyed_log(db_path)
    new_key, old_key = tmp_path / "new-key", tmp_path / "old-key"
    new_key.write_text("n" * 40 + "\n")
    old_key.write_text(KEY + "\n")
    monkeypatch.setenv("MESHBOT_AUDIT_KEY", KEY)
    assert main(["incidents", "--db", str(db_path), "rotate-key", "--new-key-file", str(new_key)]) == 0
    assert "audit key rotated at event #4" in capsys.readouterr().out
    assert main(["incidents", "--db", str(db_path), "verify"]) == EXIT_CONFIG  # the old key is no longer the log's
    assert "wrong audit key" in capsys.readouterr().err
    monkeypatch.setenv("MESHBOT_AUDIT_KEY", "n" * 40)
    assert main(["incidents", "--db", str(db_path), "verify"]) == 0
    assert "not checked: events 1\u20133 are signed with an earlier key" in capsys.readouterr().out
    assert main(["incidents", "--db", str(db_path), "verify", "--previous-key-file", str(old_key)]) == 0
    out = capsys.readouterr().out
    assert "incident log intact: 4 events" in out and "not checked" not in out
    assert not audit_key_path(db_path).exists()


def test_verify_on_postgresql_reads_the_pods_anchor_file_and_reports_a_truncation(tmp_path, postgres, monkeypatch,
                                                                                  capsys):
    url = postgres.create()
    monkeypatch.setenv("MESHBOT_DATABASE_URL", url)
    monkeypatch.setenv("MESHBOT_DATABASE_PASSWORD", PG_PASSWORD)
    monkeypatch.setenv("MESHBOT_AUDIT_KEY", KEY)
    monkeypatch.setenv("MESHBOT_DB", str(tmp_path / "meshbot.db"))  # the pod's data directory keeps its anchor
    database = open_database(tmp_path / "meshbot.db", url=url, password=PG_PASSWORD)
    log = IncidentLog(database, key=AuditKey(KEY.encode(), "MESHBOT_AUDIT_KEY"),
                      anchor_stores=(FileAnchorStore(tmp_path / "meshbot.db.anchor"),))
    for n in range(20):
        log.record(None, "alertmanager", EventKind.NOTE, {"n": n})
    log.anchor_now()
    assert main(["incidents", "verify"]) == 0
    assert "anchor file: event #20" in capsys.readouterr().out
    with database.transaction() as db:  # 15 events deleted by someone with SQL access
        db.execute("DROP TRIGGER events_no_delete ON events")
        db.execute("DELETE FROM events WHERE id > 5")
    database.close()
    assert main(["incidents", "verify"]) == 1
    assert "chain ends at #5 but the anchor of" in capsys.readouterr().err


def test_meshbot_anchors_the_idle_tail_at_shutdown(bot_factory, tmp_path):
    meshbot = bot_factory()
    incidents = meshbot.services.incidents
    for n in range(3):  # notes: no state change, so anchor_if_due waits ANCHOR_EVERY before anchoring them
        incidents.record(None, "alertmanager", EventKind.NOTE, {"n": n})
    newest = incidents.newest_event_id()
    log_id = incidents.seal().log_id
    meshbot.stop()
    anchor = FileAnchorStore(Path(meshbot.settings.db_path).with_name("meshbot.db.anchor")).latest(log_id)
    assert anchor is not None and anchor.event_id >= newest and anchor.holds(incidents.key)
