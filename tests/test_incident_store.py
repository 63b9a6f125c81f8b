"""The incident store owns the incident tables: its queries on both backends, the typed diagnosis it hands
out, and a guard that no other module in bot/ writes SQL on those tables."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from bot.incidents.alerts import Alert, AlertStatus
from bot.incidents.log import IncidentLog
from bot.incidents.notifications import NotificationLog
from bot.incidents.records import DiagnosisRecord, EventKind, IncidentStatus
from bot.server.schema import MIGRATIONS, open_intake_for
from bot.storage.database import Database

T0 = datetime(2026, 11, 30, 4, 12, tzinfo=timezone.utc)
INCIDENT_TABLES = ("incidents", "incident_alerts", "events", "audit_chain")
ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "bot/incidents/store.py"
NOTIFICATIONS = ROOT / "bot/incidents/notifications.py"
"""The one owner of ``notifications``, which lives in the request path's own file beside SQLite."""
COPIES_EVERY_TABLE = ROOT / "bot/storage/copy.py"
"""``meshbot incidents migrate`` copies every table by name, whatever feature owns it."""


def open_incident(log: IncidentLog, group_key: str = "g") -> int:
    with log.database.transaction() as db:
        return log.create(db, group_key=group_key, title="t", severity="critical", channel="C1", labels={},
                          namespaces=["prod"], services=[], external_url="", playbook=None)


def alert(status: AlertStatus = AlertStatus.FIRING) -> Alert:
    return Alert(status=status, labels={"alertname": "IstioHigh5xx"}, annotations={}, starts_at=T0, ends_at=None,
                 fingerprint="f1", generator_url="")


def diagnosis(**changes) -> DiagnosisRecord:
    fields = dict(
        playbook="default", errors=("status: cannot reach istiod",), counts={"error": 1},
        findings=({"code": "MESH101", "level": "error", "origin": "prod", "message": "m"},), findings_total=1,
        triage=({"key": "root-expired", "title": "the mesh root expired", "first_step": None},),
        suggested=({"title": "restart", "action": "restart deployment/istiod -n istio-system", "codes": []},))
    return DiagnosisRecord(**{**fields, **changes})


def test_the_stored_diagnosis_reads_back_as_the_record_that_was_stored(backend_database):
    log = IncidentLog(backend_database, anchor_stores=())
    incident_id = open_incident(log)
    stored = diagnosis(joined=7, joined_cause="the mesh root expired")
    with backend_database.transaction() as db:
        log.record_diagnosis(db, incident_id, "meshbot", stored)
    assert log.latest_diagnosis(incident_id) == stored
    assert log.get(incident_id).diagnosed


def test_the_latest_of_several_diagnoses_is_the_one_handed_out(backend_database):
    log = IncidentLog(backend_database, anchor_stores=())
    incident_id = open_incident(log)
    with backend_database.transaction() as db:
        log.record_diagnosis(db, incident_id, "meshbot", diagnosis())
        log.record_diagnosis(db, incident_id, "meshbot", diagnosis(elsewhere=3))
    assert log.latest_diagnosis(incident_id).elsewhere == 3
    assert log.latest_diagnosis(incident_id + 1) is None


def test_a_diagnosis_that_joined_nothing_stores_no_join_keys():
    assert "joined" not in diagnosis().to_data() and "joined_cause" not in diagnosis().to_data()
    assert diagnosis(joined=2, joined_cause="c").to_data()["joined"] == 2


def test_a_diagnosis_written_before_the_type_existed_reads_with_defaults():
    old = DiagnosisRecord.from_data({"playbook": "default", "counts": {"warning": 2}, "triage": []})
    assert (old.joined, old.suggested, old.findings_total, old.cause_keys) == (None, (), 0, frozenset())


def test_a_playbook_button_names_a_suggestion_only_while_it_has_an_action():
    record = diagnosis(suggested=({"title": "read", "action": None, "codes": []},
                                  {"title": "restart", "action": "restart deployment/x -n y", "codes": []}))
    assert [record.suggestion(i) is not None for i in range(3)] == [False, True, False]


def test_incident_statuses_name_only_incidents_that_exist(backend_database):
    log = IncidentLog(backend_database, anchor_stores=())
    first, second = open_incident(log, "a"), open_incident(log, "b")
    with backend_database.transaction() as db:
        log.close(db, second, "U1", "done")
    assert log.statuses([first, second, second + 5]) == {first: IncidentStatus.OPEN, second: IncidentStatus.RESOLVED}
    assert log.statuses([]) == {}


def test_an_alert_still_firing_in_a_hand_resolved_incident_is_found_for_its_group_only(backend_database):
    log = IncidentLog(backend_database, anchor_stores=())
    incident_id = open_incident(log)
    firing = alert()
    with backend_database.transaction() as db:
        log.add_alert(db, incident_id, firing)
        log.close(db, incident_id, "U1", "resolved by hand")
    with backend_database.transaction() as db:
        assert log.resolved_while_firing(db, "g", firing.occurrence) == (incident_id, "U1")
        assert log.resolved_while_firing(db, "other", firing.occurrence) is None
        assert log.resolved_with_occurrence(db, "g", firing.occurrence)


def test_notifications_are_handed_out_oldest_first_until_processed(backend_database):
    intake = open_intake_for(backend_database)
    log = NotificationLog(intake, backend_database, lambda: T0)
    with intake.transaction() as db:
        ids = [log.add(db, "2026-11-30T04:12:00Z", "g", "firing", f"{{\"n\": {i}}}") for i in range(3)]
    with log.applying(ids[0]) as step:
        step.settle()
    with log.applying(ids[1]):
        pass  # not settled (another replica holds its group, say): stays unprocessed
    assert [i for i, _ in log.unprocessed(limit=1)] == [ids[1]]
    with backend_database.transaction() as db:
        assert log.processed(db, ids[0]) and not log.processed(db, ids[1])


def test_a_notification_is_not_marked_processed_when_applying_it_fails(backend_database):
    intake = open_intake_for(backend_database)
    log = NotificationLog(intake, backend_database, lambda: T0)
    with intake.transaction() as db:
        notification_id = log.add(db, "2026-11-30T04:12:00Z", "g", "firing", "{}")
    try:
        with log.applying(notification_id) as step:
            step.settle()
            raise RuntimeError("the incident's insert failed")
    except RuntimeError:
        pass
    assert [i for i, _ in log.unprocessed()] == [notification_id]


def test_beside_a_sqlite_file_notifications_live_in_their_own_file(tmp_path):
    database = Database(tmp_path / "meshbot.db", MIGRATIONS)
    database.migrate()
    intake = open_intake_for(database)
    assert intake.path == str(tmp_path / "meshbot.intake.db")
    tables = {r[0] for r in database.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "notifications" not in tables and "slack_deliveries" not in tables
    with intake.transaction() as db:
        NotificationLog(intake, database, lambda: T0).add(db, "2026-11-30T04:12:00Z", "g", "firing", "{}")
    # The main file's writer held by a long transaction does not hold up a webhook's insert.
    with database.transaction():
        with intake.transaction() as db:
            NotificationLog(intake, database, lambda: T0).add(db, "2026-11-30T04:12:01Z", "g", "firing", "{}")
    assert len(NotificationLog(intake, database, lambda: T0).unprocessed()) == 2


def test_a_refused_command_naming_a_missing_incident_is_recorded_on_no_timeline(backend_database):
    log = IncidentLog(backend_database, anchor_stores=())
    incident_id = open_incident(log)
    log.record_refused_command("U1", "C1", "IncidentRequest", {"op": "resolve"}, "needs resolve", incident_id)
    log.record_refused_command("U2", "C1", "IncidentRequest", {"op": "resolve"}, "needs resolve", incident_id + 9)
    [on_timeline] = [e for e in log.timeline(incident_id) if e.kind == EventKind.COMMAND_REFUSED]
    assert on_timeline.actor == "U1"
    assert log.verify().events == 2, "both refusals are in the chain; one is on no incident's timeline"


def test_no_module_in_bot_but_the_store_writes_sql_on_the_incident_tables():
    statement = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+(?:%s)\b" % "|".join(INCIDENT_TABLES))
    offenders = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "bot").rglob("*.py"))
                 if path not in (STORE, COPIES_EVERY_TABLE) and statement.search(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_no_module_in_bot_but_its_owner_writes_sql_on_notifications():
    statement = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+notifications\b")
    offenders = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "bot").rglob("*.py"))
                 if path not in (NOTIFICATIONS, COPIES_EVERY_TABLE) and statement.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
