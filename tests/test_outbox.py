"""The outbox: recorded before sent, delivered in order, retried while Slack is down, across restarts."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackRequestError

from bot.slack.blocks import Message
from bot.server.schema import MIGRATIONS
from bot.storage.database import Database
from bot.incidents.log import IncidentLog
from bot.incidents.outbox import Outbox, backoff_seconds, not_before
from bot.slack.client import SlackClient, build_web_client
from tests.support.slack import BOT_TOKEN, FakeSlack

CHANNEL = "CINCIDENT"


@pytest.fixture
def database(tmp_path) -> Database:
    database = Database(tmp_path / "outbox.db", MIGRATIONS)
    database.migrate()
    return database


def make_outbox(database: Database, fake_slack: FakeSlack, *, min_post_interval: float = 0.0) -> Outbox:
    client = SlackClient(build_web_client(BOT_TOKEN, fake_slack.api_url, max_retries=0))
    return Outbox(database, client, IncidentLog(database), min_post_interval=min_post_interval)


def incident(database: Database) -> int:
    with database.transaction() as db:
        return IncidentLog(database).create(db, group_key="g", title="t", severity="critical", channel=CHANNEL,
                                            labels={}, namespaces=[], services=[], external_url="", playbook=None)


def queue_thread(outbox: Outbox, database: Database, incident_id: int, replies: int = 2) -> int:
    with database.transaction() as db:
        top = outbox.post(db, incident_id=incident_id, channel=CHANNEL, message=Message("top", []))
        for i in range(replies):
            outbox.post(db, incident_id=incident_id, channel=CHANNEL, message=Message(f"reply {i}", []),
                        thread_of=top)
        outbox.update(db, incident_id=incident_id, channel=CHANNEL, message=Message("top (updated)", []), of=top)
    return top


def drain(outbox: Outbox, passes: int = 20) -> None:
    for _ in range(passes):
        if outbox.deliver_due() is None:
            return


def test_messages_are_delivered_in_order_with_replies_in_the_first_messages_thread(database, fake_slack):
    outbox = make_outbox(database, fake_slack)
    queue_thread(outbox, database, incident(database))
    drain(outbox)
    posts = fake_slack.messages()
    assert [p["text"] for p in posts] == ["top", "reply 0", "reply 1"]
    assert posts[1]["thread_ts"] == posts[0]["_ts"] == posts[2]["thread_ts"]
    [update] = fake_slack.of("chat.update")
    assert update.args["ts"] == posts[0]["_ts"] and update.args["text"] == "top (updated)"
    assert outbox.pending_count() == 0


def test_writes_committed_by_other_threads_during_a_pass_do_not_lose_or_repeat_messages(database, fake_slack):
    outbox = make_outbox(database, fake_slack)
    incident_id = incident(database)
    queue_thread(outbox, database, incident_id, replies=3)

    def another_writer(method: str) -> None:
        # The incident processor records more messages while the outbox is talking to Slack.
        if method == "chat.postMessage":
            with database.transaction() as db:
                outbox.post(db, incident_id=incident_id, channel="COTHER", message=Message("elsewhere", []))

    fake_slack.before_answer = another_writer
    drain(outbox, passes=3)
    fake_slack.before_answer = None
    in_thread = [p["text"] for p in fake_slack.messages() if p["channel"] == CHANNEL]
    assert in_thread == ["top", "reply 0", "reply 1", "reply 2"]
    assert all(p.get("thread_ts") for p in fake_slack.messages() if p["text"].startswith("reply"))


def test_slack_down_keeps_messages_and_delivers_them_in_order_when_it_is_back(database, fake_slack):
    outbox = make_outbox(database, fake_slack)
    queue_thread(outbox, database, incident(database))
    fake_slack.down = True
    outbox.deliver_due()
    assert fake_slack.messages() == [] and outbox.pending_count() == 4
    fake_slack.down = False
    with database.transaction() as db:  # make the retry due now instead of after the backoff
        db.execute("UPDATE outbox SET next_attempt_at = NULL")
    drain(outbox)
    assert [p["text"] for p in fake_slack.messages()] == ["top", "reply 0", "reply 1"]


def test_rate_limited_post_waits_at_least_retry_after_and_later_messages_do_not_overtake(database, fake_slack):
    outbox = make_outbox(database, fake_slack)
    queue_thread(outbox, database, incident(database))
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=7)
    due = outbox.deliver_due()
    assert due is not None and 6.9 <= due <= 8
    assert fake_slack.messages() == []  # nothing behind the rate-limited message went out first
    row = next(iter(database.db.query("SELECT attempts, last_error FROM outbox ORDER BY id LIMIT 1")))
    assert row == {"attempts": 1, "last_error": "ratelimited"}


def test_a_retry_is_never_due_before_retry_after_even_at_a_fraction_of_a_second(database, fake_slack):
    failed_at = datetime(2026, 11, 23, 3, 0, 0, 900_000, tzinfo=timezone.utc)
    outbox = make_outbox(database, fake_slack)
    outbox.clock = lambda: failed_at
    queue_thread(outbox, database, incident(database), replies=0)
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=1)
    outbox.deliver_due()
    [stored] = [r[0] for r in database.db.execute("SELECT next_attempt_at FROM outbox ORDER BY id LIMIT 1")]
    assert datetime.fromisoformat(stored.replace("Z", "+00:00")) >= failed_at.replace(second=1)
    assert not_before(failed_at) == failed_at.replace(second=1, microsecond=0)


def test_a_refused_token_holds_every_channel_and_loses_nothing_until_it_is_fixed(database, fake_slack):
    outbox = make_outbox(database, fake_slack)
    incident_id = incident(database)
    with database.transaction() as db:
        for channel in (CHANNEL, "COTHER", "CTHIRD"):
            outbox.post(db, incident_id=incident_id, channel=channel, message=Message(f"to {channel}", []))
    fake_slack.fail_next("chat.postMessage", error="invalid_auth")  # the token is fixed after this answer

    outbox.deliver_due()
    assert len(fake_slack.of("chat.postMessage")) == 1, "the first refusal holds the queue; no call per channel"
    assert outbox.pending_count() == 3
    assert database.db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'failed'").fetchone()[0] == 0

    with database.transaction() as db:  # make the retry due now instead of after the backoff
        db.execute("UPDATE outbox SET next_attempt_at = NULL")
    drain(outbox)
    assert sorted(p["text"] for p in fake_slack.messages()) == ["to CINCIDENT", "to COTHER", "to CTHIRD"]


def test_backoff_after_a_day_of_failures_stays_at_the_cap():
    assert backoff_seconds(5000) == 60.0


def test_pending_messages_survive_a_restart_and_are_delivered_by_the_next_process(database, fake_slack, tmp_path):
    first = make_outbox(database, fake_slack)
    queue_thread(first, database, incident(database))
    fake_slack.down = True
    first.deliver_due()
    database.close()

    fake_slack.down = False
    reopened = Database(tmp_path / "outbox.db", MIGRATIONS)
    reopened.migrate()
    with reopened.transaction() as db:
        db.execute("UPDATE outbox SET next_attempt_at = NULL")
    second = make_outbox(reopened, fake_slack)
    drain(second)
    assert [p["text"] for p in fake_slack.messages()] == ["top", "reply 0", "reply 1"]


def test_a_message_slack_will_never_accept_fails_alone_and_is_logged(database, fake_slack):
    outbox = make_outbox(database, fake_slack)
    incident_id = incident(database)
    with database.transaction() as db:
        outbox.post(db, incident_id=incident_id, channel=CHANNEL, message=Message("doomed", []))
        outbox.post(db, incident_id=incident_id, channel=CHANNEL, message=Message("next", []))
    fake_slack.fail_next("chat.postMessage", error="invalid_blocks")
    drain(outbox)
    assert [p["text"] for p in fake_slack.messages()] == ["next"]
    kinds = [e.kind for e in IncidentLog(database).timeline(incident_id)]
    assert kinds == ["message_failed", "message_posted"]


def test_replies_to_a_message_that_failed_for_good_fail_too_instead_of_waiting_forever(database, fake_slack):
    outbox = make_outbox(database, fake_slack)
    queue_thread(outbox, database, incident(database))
    fake_slack.fail_next("chat.postMessage", error="not_in_channel")
    drain(outbox)
    states = [r["state"] for r in database.db.query("SELECT state FROM outbox ORDER BY id")]
    assert states == ["failed", "failed", "failed", "failed"]


def test_posts_to_one_channel_are_paced_to_one_per_second(database, fake_slack):
    outbox = make_outbox(database, fake_slack, min_post_interval=1.0)
    incident_id = incident(database)
    with database.transaction() as db:
        for i in range(3):
            outbox.post(db, incident_id=incident_id, channel=CHANNEL, message=Message(f"m{i}", []))
    outbox.deliver_due()
    assert len(fake_slack.messages()) == 1
    import time
    time.sleep(1.05)
    outbox.deliver_due()
    time.sleep(1.05)
    outbox.deliver_due()
    posted = fake_slack.of("chat.postMessage")
    assert [p.args["text"] for p in posted] == ["m0", "m1", "m2"]
    assert posted[1].at - posted[0].at >= 1.0 and posted[2].at - posted[1].at >= 1.0


def test_every_delivery_is_an_event_with_its_slack_ts(database, fake_slack):
    outbox = make_outbox(database, fake_slack)
    incident_id = incident(database)
    queue_thread(outbox, database, incident_id, replies=1)
    drain(outbox)
    posted = [e for e in IncidentLog(database).timeline(incident_id) if e.kind == "message_posted"]
    assert [e.data["ts"] for e in posted[:2]] == [m["_ts"] for m in fake_slack.messages()]


@pytest.mark.parametrize("attempts, retry_after, expected", [(1, None, 1), (3, None, 4), (10, None, 60),
                                                             (1, 30, 30)])
def test_backoff_doubles_up_to_a_minute_and_honours_retry_after(attempts, retry_after, expected):
    assert backoff_seconds(attempts, retry_after) == expected


def test_the_database_refuses_to_edit_or_delete_events(database):
    log = IncidentLog(database)
    log.record(None, "meshbot", "note", {"text": "x"})
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        database.db.execute("UPDATE events SET actor = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        database.db.execute("DELETE FROM events")


class _RefusingWebClient(WebClient):
    """slack_sdk refusing to build a request (it never reaches the network, so no HTTP fake can show it)."""

    def api_call(self, *args, **kwargs):
        raise SlackRequestError("the request could not be built")


def test_a_request_slack_sdk_refuses_to_build_fails_that_message_instead_of_blocking_the_channel(database, fake_slack):
    outbox = Outbox(database, SlackClient(_RefusingWebClient(token=BOT_TOKEN, base_url=fake_slack.api_url)),
                    IncidentLog(database), min_post_interval=0.0)
    queue_thread(outbox, database, incident(database), replies=0)
    drain(outbox)
    assert outbox.pending_count() == 0
    errors = [r[0] for r in database.db.execute("SELECT last_error FROM outbox ORDER BY id")]
    assert errors == ["request_error", "the message it updates could not be posted"]
