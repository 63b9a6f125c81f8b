"""``meshbot incidents migrate --to URL``: the SQLite log copied to PostgreSQL with its audit chain intact."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from bot.approvals.rule import Vote
from bot.approvals.store import ApprovalStore
from bot.incidents.audit import AuditKey
from bot.incidents.delivery import IncidentDeliveries
from bot.incidents.log import IncidentLog
from bot.incidents.records import EventKind
from bot.server.schema import MIGRATIONS, open_database
from bot.slack.blocks import Message
from bot.slack.client import SlackClient, build_web_client
from bot.slack.outbox import Outbox
from bot.storage.postgres import PostgresDatabase
from commands.actions.plan import Plan
from tests.support.postgres import PASSWORD
from tests.support.slack import BOT_TOKEN

ROOT = Path(__file__).resolve().parents[1]
KEY = "migrate-test-audit-key-0123456789abcdef"


def sqlite_log(path: Path) -> IncidentLog:
    """A SQLite log with what a running meshbot leaves: an incident, its events, outbox entries, an approval."""
    database = open_database(path)
    log = IncidentLog(database, key=AuditKey(KEY.encode(), "MESHBOT_AUDIT_KEY"), anchor_stores=())
    outbox = Outbox(database, SlackClient(build_web_client(BOT_TOKEN, "http://127.0.0.1:9/api/")),
                    record=IncidentDeliveries(log))
    now = datetime.now(timezone.utc)
    with database.transaction() as db:
        incident = log.create(db, group_key="g1", title="istiod down", severity="critical", channel="CINC",
                              labels={"alertname": "IstiodDown"}, namespaces=["istio-system"], services=[],
                              external_url="", playbook=None)
        log.append(db, incident, "meshbot", EventKind.INCIDENT_OPENED, {"title": "istiod down"})
        top = outbox.post(db, incident_id=incident, channel="CINC", message=Message("istiod down", []))
        outbox.post(db, incident_id=incident, channel="CINC", message=Message("triage", []), thread_of=top)
        # An approval request and its votes, as the desk stores them (rows only: their plan is not executed here).
        plan = Plan(action="restart istiod -n istio-system", summary="Restart istiod", changes=())
        request = db.execute(
            "INSERT INTO approval_requests (incident_id, action, plan, plan_hash, dry_run, requester, channel, state, "
            "required, created_at, expires_at) VALUES (?, 'restart istiod -n istio-system', ?, ?, '{}', 'UALICE', "
            "'CINC', 'pending', 2, ?, ?)", [incident, plan.canonical_json(), plan.hash, now.isoformat(),
                                              (now + timedelta(hours=1)).isoformat()]).lastrowid
        for user in ("UBOB", "UCAROL"):
            # Each vote row beside its accepted click in the keyed log, as the desk writes both (issue 24).
            log.append(db, incident, user, EventKind.APPROVAL_CLICK, {
                "request_id": request, "vote": "approve", "accepted": True, "verdict": "pending", "reason": ""})
            ApprovalStore().add_vote(db, request, user, Vote.APPROVE, now)
    for n in range(5):
        log.record(incident, f"U{n}", EventKind.NOTE, {"text": f"note {n}"})
    with database.transaction() as db:
        log.close(db, incident, "UALICE", "fixed")
    return log


def migrate(tmp_path: Path, db: Path, url: str) -> subprocess.CompletedProcess:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MESHBOT_DB": str(db), "MESHBOT_AUDIT_KEY": KEY,
           "MESHBOT_DATABASE_PASSWORD_FILE": str(password_file)}
    return subprocess.run([sys.executable, "-m", "bot.cli", "incidents", "migrate", "--to", url],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)


@pytest.fixture(scope="module")
def migrated(postgres, tmp_path_factory):
    """One SQLite log migrated once (each ``meshbot`` run is a process start): (source log, run, url, work dir)."""
    work = tmp_path_factory.mktemp("migrate")
    source = sqlite_log(work / "meshbot.db")
    url = postgres.create()
    return source, migrate(work, work / "meshbot.db", url), url, work


def test_migrate_copies_every_row_and_the_chain_verifies_to_the_same_head(migrated):
    source, result, url, _ = migrated
    assert result.returncode == 0, result.stderr
    assert "copied 1 row(s) of incidents" in result.stdout
    head = source.head()
    assert f"same head as the SQLite log (event #{head.event_id} \u00b7 {head.hash_prefix})" in result.stdout

    target = PostgresDatabase(url, MIGRATIONS, password=PASSWORD)
    copied = IncidentLog(target, key=source.key, anchor_stores=())
    assert [e.to_dict() for e in copied.timeline(1)] == [e.to_dict() for e in source.timeline(1)]
    assert copied.get(1) == source.get(1)
    votes = "SELECT request_id, user, vote FROM approval_votes ORDER BY at, rowid"
    assert target.db.execute(votes).fetchall() == source.database.db.execute(votes).fetchall()


def test_incidents_verify_reads_the_replicas_postgresql_when_its_url_is_set(migrated):
    _, _, url, work = migrated
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "MESHBOT_DATABASE_URL": url, "MESHBOT_AUDIT_KEY": KEY,
           "MESHBOT_DATABASE_PASSWORD": PASSWORD, "MESHBOT_DB": str(work / "absent.db")}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "incidents", "verify"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("incident log intact: 9 events")


def test_migrate_refuses_a_database_that_already_holds_incidents(migrated):
    _, _, url, work = migrated
    again = migrate(work, work / "meshbot.db", url)
    assert again.returncode != 0 and "already holds incidents" in again.stderr


def test_the_copied_log_goes_on_where_the_sqlite_one_stopped(migrated):
    source, _, url, _ = migrated
    target = PostgresDatabase(url, MIGRATIONS, password=PASSWORD)
    copied = IncidentLog(target, key=source.key, anchor_stores=())
    new_id = copied.record(1, "UBOB", EventKind.NOTE, {"text": "after the move"})
    assert new_id == source.head().event_id + 1
    assert copied.verify().intact


def test_migrate_refuses_a_tampered_sqlite_log_and_copies_nothing(postgres, tmp_path):
    sqlite_log(tmp_path / "meshbot.db")
    with sqlite3.connect(tmp_path / "meshbot.db") as db:
        db.execute("DROP TRIGGER events_no_update")
        db.execute("UPDATE events SET actor = 'mallory' WHERE id = 2")
    url = postgres.create()
    result = migrate(tmp_path, tmp_path / "meshbot.db", url)
    assert result.returncode != 0 and "does not verify" in result.stderr
    target = PostgresDatabase(url, MIGRATIONS, password=PASSWORD)
    with pytest.raises(psycopg.errors.UndefinedTable):  # not even migrated: nothing was touched
        target.db.execute("SELECT 1 FROM schema_version")


def test_migrate_refuses_a_url_with_a_password_in_it(tmp_path):
    sqlite_log(tmp_path / "meshbot.db")
    result = migrate(tmp_path, tmp_path / "meshbot.db", "postgresql://meshbot:hunter2@127.0.0.1:1/x")
    assert result.returncode != 0 and "hunter2" not in result.stderr + result.stdout


