"""Alert-occurrence rules at intake and in the incident flow, over real HTTP with the fake Slack.

Payloads are the ones captured from the real Alertmanager 0.25 (tests/data/alertmanager), changed only
where a rule needs it: a late firing after its resolve, a second group (`continue: true`), odd times.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from bot.incidents.alerts import PayloadError, parse_notification
from bot.incidents.records import utcnow

DATA = Path(__file__).parent / "data" / "alertmanager"
TOKEN = "am-token-0123456789"
OTHER_GROUP = '{}/{severity="critical"}:{alertname="EnvoySidecarCrashLoop"}'


def payload(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def incident_bot(bot_factory):
    return bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT")


def send(meshbot, body: dict) -> httpx.Response:
    return httpx.post(f"{meshbot.url}/alertmanager", content=json.dumps(body).encode(),
                      headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})


def applied(meshbot, count: int) -> None:
    """Wait until the processor has applied ``count`` stored notifications."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = meshbot.intake.db.execute("SELECT COUNT(*) FROM notifications WHERE processed_at IS NOT NULL")
        if done.fetchone()[0] >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"the processor did not apply {count} notifications within 10 s")


def stored(meshbot) -> int:
    return meshbot.intake.db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]


def open_incidents(meshbot) -> list[dict]:
    return list(meshbot.database.db.query("SELECT * FROM incidents WHERE status = 'open'"))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- times outside a sane range are 400 at intake ---------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("startsAt", "1970-01-01T00:00:00Z"),  # an unset clock
    ("startsAt", "1999-12-31T23:59:59Z"),
    ("startsAt", "9999-12-31T23:59:59Z"),
])
def test_a_start_time_outside_the_accepted_range_is_a_400_and_nothing_is_stored(incident_bot, field, value):
    body = payload("firing.json")
    body["alerts"][0][field] = value
    response = send(incident_bot, body)
    assert response.status_code == 400
    assert "alerts[0].startsAt" in response.json()["error"] and "outside the accepted range" in response.json()["error"]
    assert stored(incident_bot) == 0


def test_an_end_time_more_than_a_day_ahead_is_a_400(incident_bot):
    body = payload("firing.json")
    body["alerts"][1]["endsAt"] = rfc3339(datetime.now(timezone.utc) + timedelta(days=1, hours=1))
    response = send(incident_bot, body)
    assert response.status_code == 400 and "alerts[1].endsAt" in response.json()["error"]
    assert stored(incident_bot) == 0


def test_an_end_time_minutes_ahead_as_prometheus_sets_it_is_accepted(incident_bot):
    # Prometheus sends firing alerts with endsAt a few resend intervals ahead; that is normal.
    body = payload("firing.json")
    body["alerts"][1]["endsAt"] = rfc3339(datetime.now(timezone.utc) + timedelta(minutes=4))
    assert send(incident_bot, body).status_code == 200
    assert stored(incident_bot) == 1


def test_the_range_is_checked_against_the_time_of_receipt():
    body = payload("firing.json")
    body["alerts"][0]["startsAt"] = "2030-01-02T00:00:00Z"
    with pytest.raises(PayloadError, match="outside the accepted range"):
        parse_notification(json.dumps(body).encode(), now=datetime(2030, 1, 1, tzinfo=timezone.utc) - timedelta(hours=1))
    assert parse_notification(json.dumps(body).encode(), now=datetime(2030, 1, 1, 12, tzinfo=timezone.utc))


# -- a resolve that overtakes its firing ------------------------------------------------------------


def test_a_group_resolved_before_its_late_firing_notification_leaves_no_incident_open(incident_bot):
    assert send(incident_bot, payload("resolved.json")).status_code == 200
    applied(incident_bot, 1)
    assert send(incident_bot, payload("firing.json")).status_code == 200  # the same occurrences, retried late
    applied(incident_bot, 2)
    assert open_incidents(incident_bot) == []


def test_a_new_firing_after_the_group_resolved_still_opens_an_incident(incident_bot, fake_slack):
    assert send(incident_bot, payload("resolved.json")).status_code == 200
    applied(incident_bot, 1)
    again = payload("firing.json")
    for alert in again["alerts"]:
        alert["startsAt"] = "2024-05-14T10:05:00Z"  # after the resolve's endsAt 09:31:30: it fired again
    assert send(incident_bot, again).status_code == 200
    applied(incident_bot, 2)
    [incident] = open_incidents(incident_bot)
    assert incident["group_key"] == again["groupKey"]


def test_a_late_firing_mixed_with_a_new_alert_opens_with_the_old_one_recorded_as_resolved(incident_bot):
    assert send(incident_bot, payload("resolved.json")).status_code == 200
    applied(incident_bot, 1)
    late = payload("firing.json")
    late["alerts"][1]["startsAt"] = "2024-05-14T10:05:00Z"
    assert send(incident_bot, late).status_code == 200
    applied(incident_bot, 2)
    [incident] = open_incidents(incident_bot)
    states = {r["fingerprint"]: (r["status"], r["ends_at"]) for r in incident_bot.database.db.query(
        "SELECT * FROM incident_alerts WHERE incident_id = ?", [incident["id"]])}
    assert states == {"6aa515aaad54c153": ("resolved", "2024-05-14T09:31:30Z"), "358ca9991abeabbd": ("firing", None)}


# -- Alertmanager `continue: true`: one alert, two groups -----------------------------------------------


def test_an_occurrence_in_two_open_groups_is_recorded_in_both_incidents(incident_bot):
    first = payload("firing.json")
    second = payload("firing.json")
    second["groupKey"] = OTHER_GROUP
    second["receiver"] = "platform-oncall"
    assert send(incident_bot, first).status_code == 200
    assert send(incident_bot, second).status_code == 200
    applied(incident_bot, 2)
    incidents = {r["group_key"]: r["id"] for r in open_incidents(incident_bot)}
    assert set(incidents) == {first["groupKey"], OTHER_GROUP}
    for incident_id in incidents.values():
        fingerprints = {r["fingerprint"] for r in incident_bot.database.db.query(
            "SELECT fingerprint FROM incident_alerts WHERE incident_id = ?", [incident_id])}
        assert fingerprints == {"6aa515aaad54c153", "358ca9991abeabbd"}



# -- storing: webhooks arriving together share one transaction --------------------------------------------


def writer_database(tmp_path):
    from bot.server.schema import INTAKE_MIGRATIONS
    from bot.storage.database import Database

    database = Database(tmp_path / "meshbot.intake.db", INTAKE_MIGRATIONS)
    database.migrate()
    return database


def store_concurrently(writer, bodies: list[str]) -> list:
    """Every body from its own thread, released at once; each result is an id or the error raised."""
    import threading

    start = threading.Barrier(len(bodies))
    results: list = [None] * len(bodies)

    def one(i: int) -> None:
        start.wait()
        try:
            results[i] = writer.store("2026-11-30T04:00:00Z", f"group-{i % 3}", "firing", bodies[i])
        except Exception as exc:  # noqa: BLE001 - the test looks at what each webhook would have answered
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_concurrent_webhooks_are_each_stored_once_and_answered_with_their_own_row(tmp_path):
    from bot.incidents.notifications import NotificationLog, NotificationWriter

    database = writer_database(tmp_path)
    bodies = [json.dumps({"n": i}) for i in range(40)]
    ids = store_concurrently(NotificationWriter(NotificationLog(database, database, utcnow)), bodies)
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 40
    stored = {r["id"]: r["body"] for r in database.db.query("SELECT id, body FROM notifications")}
    assert [stored[i] for i in ids] == bodies


def test_a_failed_group_commit_answers_every_webhook_in_it_with_the_error_and_stores_none(tmp_path):
    import sqlite3

    from bot.incidents.notifications import NotificationLog, NotificationWriter

    database = writer_database(tmp_path)
    database.db.execute("CREATE TRIGGER refuse BEFORE INSERT ON notifications "
                        "WHEN NEW.body LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    bodies = ["poison"] + [json.dumps({"n": i}) for i in range(9)]
    results = store_concurrently(NotificationWriter(NotificationLog(database, database, utcnow)), bodies)
    assert isinstance(results[0], sqlite3.DatabaseError)
    for result in results[1:]:  # in the poisoned group: refused too; in a later group: stored
        assert isinstance(result, (int, sqlite3.DatabaseError))
    stored = database.db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]
    assert stored == sum(isinstance(r, int) for r in results)
