"""The request path's own SQLite file (bot/storage/intake.py): webhooks and Slack requests never wait for the main
file's writer, and upgrading an older database moves its stored rows there without losing or doubling one."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from pathlib import Path

import httpx

from bot.server.schema import INTAKE_MIGRATIONS, MIGRATIONS, open_intake_for
from bot.storage.database import Database
from bot.storage.intake import intake_path
from tests.support.slack import post_signed, slash_command_body

DATA = Path(__file__).parent / "data" / "alertmanager"
TOKEN = "am-token-0123456789"
BEFORE_THE_MOVE = [m for m in MIGRATIONS if m.version < 15]


def older_database(path: Path) -> Database:
    """A database as meshbot left it before the move (schema 14), holding one applied and one stored notification
    and a Slack delivery key."""
    database = Database(path, BEFORE_THE_MOVE)
    database.migrate()
    with database.transaction() as db:
        db.execute("INSERT INTO notifications (id, received_at, group_key, status, body, processed_at) "
                   "VALUES (7, '2026-12-01T00:00:00Z', 'g', 'firing', '{}', '2026-12-01T00:00:01Z')")
        db.execute("INSERT INTO notifications (id, received_at, group_key, status, body) "
                   "VALUES (8, '2026-12-01T00:00:02Z', 'g', 'resolved', '{\"n\": 8}')")
        db.execute("INSERT INTO slack_deliveries (key, expires_at) VALUES ('sig-1', 4102444800)")
    database.close()
    return database


def rows(path: str, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(sql).fetchall()


def test_the_intake_file_sits_beside_the_database_with_a_name_no_one_mistakes_for_sqlites_own_files():
    assert intake_path("/data/meshbot.db") == "/data/meshbot.intake.db"
    assert intake_path("/data/meshbot") == "/data/meshbot.intake"


def test_upgrading_moves_stored_notifications_and_delivery_keys_with_their_ids_and_state(tmp_path):
    older_database(tmp_path / "meshbot.db")
    database = Database(tmp_path / "meshbot.db", MIGRATIONS)
    database.migrate()
    intake = open_intake_for(database)
    assert rows(intake.path, "SELECT id, processed_at IS NOT NULL FROM notifications ORDER BY id") == [(7, 1), (8, 0)]
    assert rows(intake.path, "SELECT key FROM slack_deliveries") == [("sig-1",)]
    left = {r[0] for r in rows(database.path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not left & {"notifications", "slack_deliveries"}, "one copy of each table, in the intake file"


def test_a_move_cut_short_after_the_intake_committed_moves_nothing_twice_on_the_next_start(tmp_path):
    older_database(tmp_path / "meshbot.db")
    # The previous start copied the rows into the intake, then died before the main file dropped its tables.
    intake = Database(intake_path(tmp_path / "meshbot.db"), INTAKE_MIGRATIONS)
    intake.migrate()
    with intake.transaction() as db:
        db.execute("INSERT INTO notifications (id, received_at, group_key, status, body, processed_at) "
                   "VALUES (7, '2026-12-01T00:00:00Z', 'g', 'firing', '{}', '2026-12-01T00:00:01Z')")
    intake.close()
    database = Database(tmp_path / "meshbot.db", MIGRATIONS)
    database.migrate()
    assert rows(intake.path, "SELECT id FROM notifications ORDER BY id") == [(7,), (8,)]


def test_a_stored_notification_of_an_older_database_opens_its_incident_after_the_upgrade(bot_factory, fake_slack,
                                                                                          tmp_path):
    database = Database(tmp_path / "meshbot.db", BEFORE_THE_MOVE)
    database.migrate()
    firing = (DATA / "firing.json").read_text()
    with database.transaction() as db:
        db.execute("INSERT INTO notifications (received_at, group_key, status, body) VALUES (?, ?, 'firing', ?)",
                   ["2026-12-01T00:00:00Z", json.loads(firing)["groupKey"], firing])
    database.close()
    bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT", db_path=str(tmp_path / "meshbot.db"))
    fake_slack.wait_for(lambda: fake_slack.messages(top_level=True), what="the incident the stored notification opens")


@contextlib.contextmanager
def main_writer_held(meshbot):
    """Another thread holds the main file's write transaction (as the processor does while it applies a
    notification) until the block ends."""
    held, release = threading.Event(), threading.Event()

    def hold_the_writer() -> None:
        with meshbot.database.transaction():
            held.set()
            release.wait(20)

    holder = threading.Thread(target=hold_the_writer)
    holder.start()
    try:
        assert held.wait(5)
        yield
    finally:
        release.set()
        holder.join(10)


def test_a_webhook_is_stored_and_answered_while_the_main_files_writer_is_held(bot_factory, fake_slack):
    meshbot = bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT")
    with main_writer_held(meshbot):
        answer = httpx.post(f"{meshbot.url}/alertmanager", content=(DATA / "firing.json").read_bytes(),
                            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
                            timeout=5)
        assert answer.status_code == 200, answer.text
        stored = meshbot.intake.db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]
        assert stored == 1 and not fake_slack.messages(top_level=True), "stored, not yet applied"
    fake_slack.wait_for(lambda: fake_slack.messages(top_level=True), what="the incident, once the writer is free")


def test_a_slash_command_is_acknowledged_while_the_main_files_writer_is_held(bot_factory, fake_slack):
    meshbot = bot_factory()
    with main_writer_held(meshbot):
        answer = post_signed(f"{meshbot.url}/slack/events", slash_command_body("help"), timeout=5)
        assert answer.status_code == 200 and "/mesh" in answer.text
        recorded = meshbot.intake.db.execute("SELECT COUNT(*) FROM slack_deliveries").fetchone()[0]
        assert recorded == 1, "its replay key is kept before the answer"
