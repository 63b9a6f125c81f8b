"""The outbox: recorded before sent, delivered in order, retried while Slack is down, across restarts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackRequestError

from bot.incidents.delivery import IncidentDeliveries
from bot.incidents.log import IncidentLog
from bot.slack.blocks import Message
from bot.slack.client import SlackClient, SlackError, SlackErrorKind, build_web_client
from bot.slack.entries import backoff_seconds, not_before
from bot.slack.outbox import Outbox
from bot.storage.database import Database
from tests.support.postgres import DATABASE_ERRORS, reopen
from tests.support.slack import BOT_TOKEN, FakeSlack, post_signed, slash_command_body

CHANNEL = "CINCIDENT"


@pytest.fixture
def database(backend_database) -> Database:
    """Every test here runs on SQLite and on PostgreSQL (tests/support/postgres.py)."""
    return backend_database


def make_outbox(database: Database, fake_slack: FakeSlack, *, min_post_interval: float = 0.0) -> Outbox:
    client = SlackClient(build_web_client(BOT_TOKEN, fake_slack.api_url, max_retries=0))
    return Outbox(database, client, record=IncidentDeliveries(IncidentLog(database)), min_post_interval=min_post_interval)


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


def test_a_rate_limit_waits_exactly_retry_after_however_many_attempts_failed_before():
    assert backoff_seconds(7, retry_after=3.0) == 3.0  # not the 60 s the seventh outage retry would wait


def test_pending_messages_survive_a_restart_and_are_delivered_by_the_next_process(database, fake_slack, tmp_path):
    first = make_outbox(database, fake_slack)
    queue_thread(first, database, incident(database))
    fake_slack.down = True
    first.deliver_due()
    database.close()

    fake_slack.down = False
    reopened = reopen(database)
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


def test_an_internal_error_answered_with_status_200_is_retried_later_not_failed(database, fake_slack):
    outbox = make_outbox(database, fake_slack)
    queue_thread(outbox, database, incident(database), replies=0)
    fake_slack.fail_next("chat.postMessage", error="internal_error")
    assert outbox.deliver_due() is not None
    row = next(iter(database.db.query("SELECT state, attempts, last_error FROM outbox ORDER BY id LIMIT 1")))
    assert row == {"state": "pending", "attempts": 1, "last_error": "internal_error"}


@pytest.mark.parametrize("error, transient, kind", [
    ("token_revoked", False, SlackErrorKind.WORKSPACE),
    ("channel_not_found", False, SlackErrorKind.NOT_IN_CHANNEL),
    ("is_archived", True, SlackErrorKind.NOT_IN_CHANNEL),
    ("msg_too_long", True, SlackErrorKind.PERMANENT),  # Slack's code wins over a 5xx status
    ("ratelimited", False, SlackErrorKind.TRANSIENT),
    ("HTTP 502", True, SlackErrorKind.TRANSIENT),
    ("some_new_code", False, SlackErrorKind.PERMANENT),
])
def test_one_classifier_decides_what_a_slack_error_means(error, transient, kind):
    assert SlackError("chat.postMessage", error, transient=transient).kind == kind


class RecordedDeliveries:
    """A DeliveryRecord that keeps what it is told, and what the outbox row said at that moment."""

    def __init__(self) -> None:
        self.deliveries = []
        self.passes = 0

    def recorded(self, db, delivery) -> None:
        [state] = db.execute("SELECT state FROM outbox WHERE id = ?", [delivery.entry.id]).fetchone()
        self.deliveries.append((delivery, state))

    def finished(self, incident_ids):
        return ()

    def severity_ranks(self, incident_ids):
        return {}

    def before_pass(self, outbox) -> None:
        self.passes += 1

    def after_pass(self) -> None:
        pass


def test_the_record_is_told_each_sent_message_with_its_ts_and_thread_in_the_transaction_that_marks_it_sent(
        database, fake_slack):
    record = RecordedDeliveries()
    client = SlackClient(build_web_client(BOT_TOKEN, fake_slack.api_url, max_retries=0))
    outbox = Outbox(database, client, record=record, min_post_interval=0.0)
    top = queue_thread(outbox, database, incident(database), replies=1)
    drain(outbox)
    posted = fake_slack.messages()
    sent = [(d.entry.op, d.ts, d.thread_of, state) for d, state in record.deliveries]
    assert sent == [("post", posted[0]["_ts"], None, "sent"), ("post", posted[1]["_ts"], top, "sent"),
                    ("update", posted[0]["_ts"], None, "sent")]
    assert record.passes >= 1


def test_an_outbox_with_no_record_delivers_posts_that_belong_to_no_incident(database, fake_slack):
    outbox = Outbox(database, SlackClient(build_web_client(BOT_TOKEN, fake_slack.api_url, max_retries=0)),
                    min_post_interval=0.0)
    with database.transaction() as db:
        top = outbox.post(db, incident_id=None, channel=CHANNEL, message=Message("reminder", []))
        outbox.post(db, incident_id=None, channel=CHANNEL, message=Message("details", []), thread_of=top)
    drain(outbox)
    first, reply = fake_slack.messages()
    assert (first["text"], reply["text"], reply["thread_ts"]) == ("reminder", "details", first["_ts"])
    assert database.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


class Clock:
    """The outbox's injected clock: tests move time on instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 4, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def clocked_outbox(database: Database, fake_slack: FakeSlack, clock: Clock, **options) -> Outbox:
    client = SlackClient(build_web_client(BOT_TOKEN, fake_slack.api_url, max_retries=0))
    return Outbox(database, client, record=IncidentDeliveries(IncidentLog(database, clock=clock)), clock=clock,
                  **options)


def run_until(outbox: Outbox, clock: Clock, done, limit: float = 600.0) -> float:
    """Deliver, moving the clock on by what the outbox says it waits for; returns the simulated seconds."""
    started = clock.now
    while True:
        wait = outbox.deliver_due()
        if done():
            break
        assert wait is not None, "the queue ran dry first"
        clock.advance(max(wait, 0.001))
        assert (clock.now - started).total_seconds() < limit, f"not done within {limit} simulated seconds"
    return (clock.now - started).total_seconds()


def test_posts_to_one_channel_are_paced_to_one_per_second_by_the_injected_clock(database, fake_slack):
    clock = Clock()
    outbox = clocked_outbox(database, fake_slack, clock, min_post_interval=1.0)
    incident_id = incident(database)
    with database.transaction() as db:
        for i in range(3):
            outbox.post(db, incident_id=incident_id, channel=CHANNEL, message=Message(f"m{i}", []))
    assert outbox.deliver_due() == pytest.approx(1.0)
    assert outbox.deliver_due() == pytest.approx(1.0)  # no time passed: still one post
    assert [m["text"] for m in fake_slack.messages()] == ["m0"]
    clock.advance(0.99)
    outbox.deliver_due()
    assert len(fake_slack.messages()) == 1
    clock.advance(0.01)
    outbox.deliver_due()
    clock.advance(1.0)
    outbox.deliver_due()
    assert [m["text"] for m in fake_slack.messages()] == ["m0", "m1", "m2"]


def open_incident(outbox: Outbox, database: Database, title: str) -> tuple[int, int]:
    """An incident with its top-level message recorded: (incident id, outbox entry of the message)."""
    log = IncidentLog(database)
    with database.transaction() as db:
        incident_id = log.create(db, group_key=title, title=title, severity="critical", channel=CHANNEL, labels={},
                                 namespaces=[], services=[], external_url="", playbook=None)
        top = outbox.post(db, incident_id=incident_id, channel=CHANNEL, message=Message(f"CRITICAL: {title}", []))
        log.set_top_message(db, incident_id, top)
    return incident_id, top


def alert_updates(outbox: Outbox, database: Database, incident_id: int, top: int, count: int,
                  namespaces: int = 12) -> None:
    with database.transaction() as db:
        for i in range(count):
            namespace = f"team-{i % namespaces}"
            outbox.post_alert_update(db, incident_id=incident_id, channel=CHANNEL, thread_of=top,
                                     message=Message(f"Alert firing: KubePodCrashLooping (namespace={namespace}, "
                                                     f"pod=worker-{i})", []),
                                     namespace=namespace, resolved=False)


def posted_texts(fake_slack: FakeSlack) -> list[str]:
    return [m["text"] for m in fake_slack.messages()]


def test_9000_alerts_in_one_group_become_one_reply_with_the_list_attached_and_istiod_down_posts_within_seconds(
        database, fake_slack):
    clock = Clock()
    outbox = clocked_outbox(database, fake_slack, clock, min_post_interval=1.0)
    storm, storm_top = open_incident(outbox, database, "KubePodCrashLooping")
    run_until(outbox, clock, lambda: outbox.pending_count() == 0)
    alert_updates(outbox, database, storm, storm_top, 9000)
    _, istiod_top = open_incident(outbox, database, "IstiodDown")

    took = run_until(outbox, clock, lambda: "CRITICAL: IstiodDown" in posted_texts(fake_slack))
    assert took <= 2.0
    run_until(outbox, clock, lambda: outbox.pending_count() == 0)
    [upload] = fake_slack.of("files.completeUploadExternal")
    assert upload.args["initial_comment"] == "+9,000 alerts, 12 namespaces; full list attached"
    assert upload.args["thread_ts"] == fake_slack.messages(top_level=True)[0]["_ts"]
    [content] = fake_slack.uploads.values()
    assert len(content.decode().splitlines()) == 9000
    assert len(fake_slack.of("chat.postMessage")) == 2  # the two top-level messages; no 9,000 replies
    [batch_event] = [e for e in IncidentLog(database).timeline(storm) if e.data.get("batched")]
    assert batch_event.data["batched"] == 9000


def test_a_new_incident_is_not_queued_behind_another_incidents_thread_backlog(database, fake_slack):
    clock = Clock()
    outbox = clocked_outbox(database, fake_slack, clock, min_post_interval=1.0)
    busy, busy_top = open_incident(outbox, database, "GatewayErrors")
    run_until(outbox, clock, lambda: outbox.pending_count() == 0)
    with database.transaction() as db:  # replies that are not alert updates (notes, diagnostics) are not batched
        for i in range(50):
            outbox.post(db, incident_id=busy, channel=CHANNEL, message=Message(f"note {i}", []), thread_of=busy_top)
    open_incident(outbox, database, "IstiodDown")
    assert run_until(outbox, clock, lambda: "CRITICAL: IstiodDown" in posted_texts(fake_slack)) <= 2.0
    run_until(outbox, clock, lambda: outbox.pending_count() == 0)
    notes = [t for t in posted_texts(fake_slack) if t.startswith("note")]
    assert notes == [f"note {i}" for i in range(50)]  # one incident's thread keeps its order


def test_a_resolve_goes_out_before_another_incidents_backlog(database, fake_slack):
    clock = Clock()
    outbox = clocked_outbox(database, fake_slack, clock, min_post_interval=1.0)
    log = IncidentLog(database, clock=clock)
    busy, busy_top = open_incident(outbox, database, "GatewayErrors")
    done, done_top = open_incident(outbox, database, "CertExpiring")
    run_until(outbox, clock, lambda: outbox.pending_count() == 0)
    with database.transaction() as db:
        for i in range(30):
            outbox.post(db, incident_id=busy, channel=CHANNEL, message=Message(f"note {i}", []), thread_of=busy_top)
        log.close(db, done, "alertmanager", "all alerts of the group resolved")
        outbox.post(db, incident_id=done, channel=CHANNEL, message=Message("Incident resolved", []),
                    thread_of=done_top)
    assert run_until(outbox, clock, lambda: "Incident resolved" in posted_texts(fake_slack)) <= 3.0


def test_alert_updates_wait_for_the_batch_interval_and_are_summarised_together(database, fake_slack):
    clock = Clock()
    outbox = clocked_outbox(database, fake_slack, clock, min_post_interval=1.0, batch_interval=30.0)
    storm, storm_top = open_incident(outbox, database, "KubePodCrashLooping")
    run_until(outbox, clock, lambda: outbox.pending_count() == 0)
    alert_updates(outbox, database, storm, storm_top, 3, namespaces=2)
    run_until(outbox, clock, lambda: outbox.pending_count() == 0)
    assert posted_texts(fake_slack)[-1].count("Alert firing") == 3  # a few: their lines in one reply
    alert_updates(outbox, database, storm, storm_top, 2)
    clock.advance(5)
    assert outbox.deliver_due() == pytest.approx(25.0, abs=1.01)  # at most one reply per 30 s per incident
    alert_updates(outbox, database, storm, storm_top, 40, namespaces=4)
    took = run_until(outbox, clock, lambda: outbox.pending_count() == 0)
    assert 24.0 <= took <= 27.0
    [upload] = fake_slack.of("files.completeUploadExternal")
    assert upload.args["initial_comment"] == "+42 alerts, 4 namespaces; full list attached"


def test_top_message_refreshes_between_alert_updates_go_out_while_the_batch_waits(database, fake_slack):
    # The flow records each notification's alert lines, then a refresh of the incident's top message.
    clock = Clock()
    outbox = clocked_outbox(database, fake_slack, clock, min_post_interval=1.0, batch_interval=30.0)
    storm, storm_top = open_incident(outbox, database, "KubePodCrashLooping")

    def notification(alerts: int, version: int) -> None:
        alert_updates(outbox, database, storm, storm_top, alerts)
        with database.transaction() as db:
            outbox.update(db, incident_id=storm, channel=CHANNEL, message=Message(f"top v{version}", []),
                          of=storm_top)

    notification(3, 1)
    run_until(outbox, clock, lambda: outbox.pending_count() == 0)
    notification(2, 2)
    notification(4, 3)
    clock.advance(5)
    assert outbox.deliver_due() == pytest.approx(25.0, abs=1.01)
    assert [c.args["text"] for c in fake_slack.of("chat.update")] == ["top v1", "top v2", "top v3"]
    assert outbox.pending_count() == 6  # the 2 + 4 alert updates wait for one reply
    run_until(outbox, clock, lambda: outbox.pending_count() == 0)
    replies = fake_slack.messages(thread_ts=fake_slack.messages(top_level=True)[0]["_ts"])
    assert len(replies) == 1 and len(fake_slack.of("files.completeUploadExternal")) == 1  # 3 lines, then 6 as one


def test_a_lone_alert_update_is_posted_as_it_is(database, fake_slack):
    clock = Clock()
    outbox = clocked_outbox(database, fake_slack, clock)
    storm, storm_top = open_incident(outbox, database, "KubePodCrashLooping")
    alert_updates(outbox, database, storm, storm_top, 1)
    run_until(outbox, clock, lambda: outbox.pending_count() == 0)
    assert posted_texts(fake_slack) == ["CRITICAL: KubePodCrashLooping",
                                        "Alert firing: KubePodCrashLooping (namespace=team-0, pod=worker-0)"]


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
    with pytest.raises(DATABASE_ERRORS, match="append-only"):
        database.db.execute("UPDATE events SET actor = 'mallory'")
    with pytest.raises(DATABASE_ERRORS, match="append-only"):
        database.db.execute("DELETE FROM events")


class _RefusingWebClient(WebClient):
    """slack_sdk refusing to build a request (it never reaches the network, so no HTTP fake can show it)."""

    def api_call(self, *args, **kwargs):
        raise SlackRequestError("the request could not be built")


def test_a_request_slack_sdk_refuses_to_build_fails_that_message_instead_of_blocking_the_channel(database, fake_slack):
    outbox = Outbox(database, SlackClient(_RefusingWebClient(token=BOT_TOKEN, base_url=fake_slack.api_url)),
                    record=IncidentDeliveries(IncidentLog(database)), min_post_interval=0.0)
    queue_thread(outbox, database, incident(database), replies=0)
    drain(outbox)
    assert outbox.pending_count() == 0
    errors = [r[0] for r in database.db.execute("SELECT last_error FROM outbox ORDER BY id")]
    assert errors == ["request_error", "the message it updates could not be posted"]


# -- slash-command answers are as durable as incident posts ---------------------------------------------


def test_diagnose_findings_ready_while_slack_is_down_are_delivered_when_it_is_back(meshbot, fake_slack):
    posted = []

    def down_after_the_running_message(method: str) -> None:
        if method == "chat.postMessage":
            posted.append(method)
            fake_slack.down = len(posted) > 1  # "Running…" got through; Slack fails when the findings are ready

    fake_slack.before_answer = down_after_the_running_message
    body = slash_command_body("diagnose prod", response_url=fake_slack.response_url())
    assert post_signed(f"{meshbot.url}/slack/events", body).status_code == 200
    fake_slack.wait_for(lambda: meshbot.outbox.pending_count() and len(posted) > 1, timeout=15,
                        what="a refused attempt to post the findings")
    assert fake_slack.messages(thread_ts=fake_slack.messages(top_level=True)[0]["_ts"]) == []
    fake_slack.before_answer = None
    fake_slack.down = False
    meshbot.outbox.wake()
    [top] = fake_slack.messages(top_level=True)
    [report] = fake_slack.wait_for(lambda: fake_slack.messages(thread_ts=top["_ts"]), timeout=15,
                                   what="the findings after Slack came back")
    # The reply is short (issue 27): the triage in the thread, every finding in the full report attached to it.
    assert "the full report is attached" in str(report["blocks"])
    attached = fake_slack.wait_for(
        lambda: [f for f in fake_slack.files.values() if f.thread_ts == top["_ts"]], timeout=15,
        what="the full report attached in the thread")
    assert any(b"CrashLoopBackOff (25 restarts)" in f.content for f in attached)
    fake_slack.wait_for(lambda: [c for c in fake_slack.of("chat.update") if c.args.get("_ok")
                                 and c.args["ts"] == top["_ts"] and c.args["text"].startswith("diagnose for prod")],
                        timeout=15, what="the Running message replaced by the outcome")


def test_a_critical_incident_opened_after_twenty_new_warnings_is_posted_first(database, fake_slack):
    outbox = make_outbox(database, fake_slack, min_post_interval=3600.0)  # one post per pass: the order is visible
    log = IncidentLog(database)
    with database.transaction() as db:
        for n in range(20):
            warning = log.create(db, group_key=f"w{n}", title=f"warning {n}", severity="warning", channel=CHANNEL,
                                 labels={}, namespaces=[], services=[], external_url="", playbook=None)
            outbox.post(db, incident_id=warning, channel=CHANNEL, message=Message(f"warning {n}", []))
        critical = log.create(db, group_key="c", title="critical", severity="critical", channel=CHANNEL,
                              labels={}, namespaces=[], services=[], external_url="", playbook=None)
        outbox.post(db, incident_id=critical, channel=CHANNEL, message=Message("critical", []))
    outbox.deliver_due()
    assert [m["text"] for m in fake_slack.messages()] == ["critical"]
