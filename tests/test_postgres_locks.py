"""Per-key locks on PostgreSQL (issue 23, "no fleet-wide lock"): a replica paused inside a transaction about one
alert group or one approval request holds up nobody deciding about another; the audit chain is the one lock all
replicas share.  Plus the Slack note for a notification that can never apply.  Against the real server of
tests/support/postgres.py; the replicas are meshbot servers in this process sharing it, as pods would."""

from __future__ import annotations

import json
import threading
import time

import pytest

from bot.approvals.rule import RequestState
from bot.incidents.audit import AuditKey
from bot.incidents.log import IncidentLog
from bot.incidents.notifications import SET_ASIDE
from bot.server.schema import MIGRATIONS
from bot.storage.dialect import Lock, lock_key, try_lock_key
from bot.storage.postgres import LOCK_TIMEOUT_MS, PostgresDatabase
from tests.support.bot import quiesce
from tests.support.kube import FakeKube
from tests.support.replicas import notification
from tests.test_approvals import approve
from tests.test_ha_approvals import approval_replicas, ask_in
from tests.test_incidents import TOKEN, send

AUDIT_KEY = "locks-test-audit-key-0123456789abcdef012"
PAUSED_SECONDS = 120
"""How long the paused replica's transaction may stay idle before the server ends it: longer than the test, so
nothing it holds is freed by the server while the other replica works."""


# -- the locks themselves -------------------------------------------------------------------------


def held_elsewhere(database: PostgresDatabase, kind: Lock, key: object) -> bool:
    """Whether another transaction holds the (kind, key) lock now: asked without waiting, from a transaction of
    its own on ``database``."""
    with database.transaction() as db:
        return not try_lock_key(db, kind, key)


def test_a_key_lock_stops_only_transactions_about_the_same_key_and_ends_with_its_transaction(postgres):
    first = postgres.fresh()
    second = PostgresDatabase(first.url, MIGRATIONS)
    with first.transaction() as db:
        lock_key(db, Lock.GROUP, "g1")
        assert held_elsewhere(second, Lock.GROUP, "g1")
        assert not held_elsewhere(second, Lock.GROUP, "g2")
        assert not held_elsewhere(second, Lock.REQUEST, "g1"), "kinds are apart: request 'g1' is not group 'g1'"
    assert not held_elsewhere(second, Lock.GROUP, "g1"), "released at the commit"
    second.close()


def test_two_schemas_in_one_database_lock_apart(postgres):
    # The tests (and two installations sharing a server) use schemas of one database; advisory locks are per
    # database, so the schema is part of the key.
    mine, theirs = postgres.fresh(), postgres.fresh()
    with mine.transaction() as db:
        lock_key(db, Lock.AUDIT_CHAIN, "events")
        assert not held_elsewhere(theirs, Lock.AUDIT_CHAIN, "events")


def test_outside_a_transaction_a_key_lock_holds_nothing(postgres):
    database = postgres.fresh()
    lock_key(database.db, Lock.GROUP, "g1")  # a statement of its own: nothing would outlive it
    other = PostgresDatabase(database.url, MIGRATIONS)
    assert not held_elsewhere(other, Lock.GROUP, "g1")
    other.close()


def test_an_event_appended_holds_the_audit_chain_until_its_transaction_commits(postgres):
    database = postgres.fresh()
    other = PostgresDatabase(database.url, MIGRATIONS)
    log = IncidentLog(database, key=AuditKey.generate(), anchor_stores=())
    with database.transaction() as db:
        lock_key(db, Lock.GROUP, "g1")
        assert not held_elsewhere(other, Lock.AUDIT_CHAIN, "events"), "a decision's reads run before the chain's lock"
        log.append(db, None, "meshbot", "note", {"text": "one"})
        assert held_elsewhere(other, Lock.AUDIT_CHAIN, "events")
    assert not held_elsewhere(other, Lock.AUDIT_CHAIN, "events")
    other.close()


# -- two replicas, one paused ---------------------------------------------------------------------


@pytest.fixture
def pair(kube: FakeKube, bot_factory, fake_slack, tmp_path, postgres, istiod_server):
    """Two replicas on one fresh PostgreSQL database, taking alerts and approvals (two approvals required), with a
    healthy istiod so the actions' preconditions hold."""
    return approval_replicas(kube, bot_factory, fake_slack, tmp_path, postgres, istiod_server, teams=2, count=2,
                             audit_key=AUDIT_KEY, alertmanager_token=TOKEN)


def group_key(group: int) -> str:
    return json.loads(notification(group, 0))["groupKey"]


class PausedReplica:
    """A replica stopped (SIGSTOP, a long GC) in the middle of a transaction about one alert group and one approval
    request: a thread blocked on an Event inside ``database.transaction()``, holding their locks."""

    def __init__(self, meshbot, group: str, request_id: int):
        self.entered, self.release = threading.Event(), threading.Event()
        self.committed = False
        self._thread = threading.Thread(target=self._run, args=(meshbot, group, request_id), daemon=True)

    def _run(self, meshbot, group: str, request_id: int) -> None:
        with meshbot.database.transaction() as db:
            db.execute(f"SET LOCAL idle_in_transaction_session_timeout = {PAUSED_SECONDS * 1000}")
            lock_key(db, Lock.GROUP, group)  # applying this group's notification…
            meshbot.services.approvals.store.get(db, request_id)  # …and deciding about this request
            self.entered.set()
            self.release.wait(PAUSED_SECONDS)
        self.committed = True

    def __enter__(self) -> PausedReplica:
        self._thread.start()
        assert self.entered.wait(10), "the paused replica never got its locks"
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._thread.join(10)

    @property
    def still_paused(self) -> bool:
        return self._thread.is_alive() and not self.release.is_set()


def incident_of(meshbot, group: str):
    with meshbot.database.transaction() as db:
        return meshbot.services.incidents.open_for_group(db, group)


def alerts_of(meshbot, incident_id: int) -> int:
    return meshbot.database.db.execute("SELECT COUNT(*) FROM incident_alerts WHERE incident_id = ?",
                                       [incident_id]).fetchone()[0]


def unprocessed(meshbot, group: str) -> int:
    return meshbot.database.db.execute("SELECT COUNT(*) FROM notifications WHERE group_key = ? AND processed_at IS "
                                       "NULL", [group]).fetchone()[0]


def test_a_replica_paused_inside_one_groups_transaction_holds_up_no_other_group_and_no_other_request(
        pair, fake_slack):
    first, second = pair
    held_request = ask_in(first, fake_slack, "permissive-mtls team-0", "CTEAM0")
    other_request = ask_in(first, fake_slack, "permissive-mtls team-1", "CTEAM1")
    paused_group, other_group = group_key(0), group_key(1)

    with PausedReplica(first, paused_group, held_request) as paused:
        started = time.monotonic()
        # The paused group's notification arrives first: the processors skip it, they do not queue behind it.
        assert send(second, notification(0, 0)).status_code == 200
        assert send(second, notification(1, 0)).status_code == 200
        opened = fake_slack.wait_for(lambda: incident_of(second, other_group), what="the other group's incident")
        assert send(second, notification(1, 3)).status_code == 200  # a second alert joins it
        fake_slack.wait_for(lambda: alerts_of(second, opened.id) == 2 and not unprocessed(second, other_group),
                            what="the other group's update applied")
        top = fake_slack.wait_for(lambda: second.services.outbox.ts_of(opened.top_message),
                                  what="the other group's incident posted in Slack")
        answers = approve(second, fake_slack, other_request, "UBOB", "UCAROL")
        decided = second.services.approvals.get(other_request).state
        elapsed = time.monotonic() - started

        assert paused.still_paused, "the paused replica held its locks throughout"
        assert elapsed < LOCK_TIMEOUT_MS / 1000, f"{elapsed:.1f}s: something waited for the paused replica's locks"
        assert top and len(answers) == 2, answers
        assert decided in (RequestState.EXECUTING, RequestState.SUCCEEDED), decided
        # What the paused replica holds does wait: its group's notification is applied after it, not beside it.
        assert unprocessed(second, paused_group) == 1
        assert second.services.approvals.get(held_request).state == RequestState.PENDING

    assert paused.committed, "the paused transaction was never ended by the server meanwhile"
    fake_slack.wait_for(lambda: incident_of(second, paused_group) and not unprocessed(second, paused_group),
                        timeout=30, what="the paused group's notification applied once it was released")


# -- a notification that can never apply ------------------------------------------------------------


def store_unreadable(meshbot, group: str) -> None:
    """A notification stored by an older meshbot whose successor cannot read it (no alerts in its body)."""
    with meshbot.intake.transaction() as db:
        db.execute("INSERT INTO notifications (received_at, group_key, status, body) VALUES (?, ?, ?, ?)",
                   ["2026-11-23T03:00:00Z", group, "firing", '{"groupKey": "%s"}' % group])


def test_a_notification_set_aside_is_said_in_the_incident_channel_once_per_group(bot_factory, fake_slack,
                                                                                  backend_settings):
    meshbot = bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT", **backend_settings)
    for group in ("group-a", "group-a", "group-b"):
        store_unreadable(meshbot, group)
    meshbot.services.incident_flow.process_pending()
    quiesce(meshbot)  # every note that would be posted has been
    notes = [m for m in fake_slack.messages(top_level=True) if "set aside" in m["text"]]
    assert [m["channel"] for m in notes] == ["CINCIDENT", "CINCIDENT"]
    assert sorted("group-a" in m["text"] for m in notes) == [False, True]
    assert all("PayloadError" in m["text"] for m in notes), "the note says why"
    errors = [r[0] for r in meshbot.intake.db.execute("SELECT error FROM notifications ORDER BY id").fetchall()]
    assert len(errors) == 3 and all(e.startswith(SET_ASIDE) for e in errors), "all three set aside, one note each group"
