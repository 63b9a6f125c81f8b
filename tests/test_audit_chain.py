"""The keyed audit chain: edits, recomputation without the key, truncation against the anchors outside the
database (a file, the scheduler's Lease on kmock's API server, the incident thread), the legacy prefix of
databases written before the key, and approval plans bound to their request with the same key."""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
from datetime import datetime, timedelta, timezone

import pytest

from bot.approvals.rule import RequestState
from bot.incidents.anchors import FileAnchorStore, LeaseAnchorStore
from bot.incidents.audit import GENESIS, AuditKey, audit_key_path, event_hash, event_mac, load_audit_key
from bot.incidents.delivery import IncidentDeliveries
from bot.incidents.log import AuditKeyError, IncidentLog
from bot.incidents.records import EventKind
from bot.server.schema import MIGRATIONS
from bot.settings import Settings, SettingsError
from bot.slack.blocks import Message
from bot.slack.client import SlackClient, build_web_client
from bot.slack.outbox import Outbox
from bot.storage.database import Database
from commands.actions import Plan
from commands.actions.planners import EMERGENCY_POLICY
from commands.clients.lease import LeaderElector
from commands.errors import UserError
from tests.support.istiod import syncz_entry
from tests.support.kube import FakeKube, write_kubeconfig
from tests.support.slack import BOT_TOKEN
from tests.test_actions import deployment, namespace
from tests.test_approvals import APPROVERS, approve, ask, istiod_pod, wait_finished

KEY = AuditKey(b"k" * 40, "test")
T0 = datetime(2026, 11, 30, 4, 12, tzinfo=timezone.utc)
CHANNEL = "CINCIDENT"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def database(tmp_path) -> Database:
    database = Database(tmp_path / "meshbot.db", MIGRATIONS)
    database.migrate()
    return database


def write_events(log: IncidentLog, count: int) -> None:
    for i in range(count):
        log.record(None, "alertmanager", EventKind.NOTE, {"n": i})


def attacker(database: Database) -> sqlite3.Connection:
    """What someone with write access to the database file (but not to the key) can do."""
    connection = sqlite3.connect(database.path, isolation_level=None)
    connection.execute("DROP TRIGGER IF EXISTS events_no_update")
    connection.execute("DROP TRIGGER IF EXISTS events_no_delete")
    return connection


def recompute_chain(connection: sqlite3.Connection, digest) -> None:
    """Rewrite every hash so each event links to the one before: what a careful forger does after an edit."""
    prev = GENESIS
    for row in connection.execute("SELECT id, incident_id, at, actor, kind, data FROM events ORDER BY id").fetchall():
        new = digest(prev, *row[1:])
        connection.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", [prev, new, row[0]])
        prev = new


# -- edits and recomputation -----------------------------------------------------------------------


def test_an_edited_event_with_the_plain_chain_recomputed_fails_verify_without_the_key(database):
    log = IncidentLog(database, key=KEY, anchor_stores=())
    write_events(log, 5)
    assert log.verify().intact
    forger = attacker(database)
    forger.execute("UPDATE events SET actor = 'mallory' WHERE id = 3")
    recompute_chain(forger, event_hash)  # the old, unkeyed SHA-256 chain
    report = log.verify()
    assert report.broken_at == 1  # the first recomputed event no longer carries the HMAC
    assert "recomputed without the key" in report.reason


def test_a_chain_recomputed_with_a_guessed_key_fails_at_the_first_rewritten_event(database):
    log = IncidentLog(database, key=KEY, anchor_stores=())
    write_events(log, 5)
    forger = attacker(database)
    forger.execute("UPDATE events SET data = '{\"n\": 99}' WHERE id = 4")
    wrong = AuditKey(b"w" * 40, "guess")
    prev = forger.execute("SELECT hash FROM events WHERE id = 3").fetchone()[0]
    row = forger.execute("SELECT incident_id, at, actor, kind, data FROM events WHERE id = 4").fetchone()
    forger.execute("UPDATE events SET hash = ? WHERE id = 4", [event_mac(wrong, prev, *row)])
    report = log.verify()
    assert (report.broken_at, report.intact) == (4, False)


def test_an_untouched_keyed_chain_verifies_and_names_no_unkeyed_events(database):
    log = IncidentLog(database, key=KEY, anchor_stores=())
    write_events(log, 3)
    report = log.verify()
    assert report.intact and report.events == 3 and report.unkeyed == 0
    assert not any("unkeyed" in line for line in report.lines())


# -- truncation against the anchors --------------------------------------------------------------------


def test_deleting_the_newest_events_is_reported_against_the_file_anchor(database, tmp_path):
    clock = Clock()
    anchor = FileAnchorStore(tmp_path / "meshbot.db.anchor")
    log = IncidentLog(database, clock=clock, key=KEY, anchor_stores=(anchor,))
    write_events(log, 8)
    assert log.anchor_now().event_id == 8
    assert log.verify().intact
    attacker(database).execute("DELETE FROM events WHERE id > 5")
    report = log.verify()
    assert not report.intact
    assert report.reason.startswith("chain ends at #5 but the anchor of 04:12 UTC on 2026-11-30 (file) names #8")


def test_without_an_anchor_the_same_truncation_passes_and_verify_says_it_cannot_tell(database):
    # The near miss: what the anchor adds.  Without one, a cut at the end leaves a valid chain.
    log = IncidentLog(database, key=KEY, anchor_stores=())
    write_events(log, 8)
    attacker(database).execute("DELETE FROM events WHERE id > 5")
    report = log.verify()
    assert report.intact
    assert "no anchor found outside the database" in report.lines()[-1]


def test_a_chain_rewritten_with_the_key_is_caught_by_the_anchored_hash(database, tmp_path):
    # An attacker who stole the key but not the anchor store: the recomputed head no longer matches.
    anchor = FileAnchorStore(tmp_path / "meshbot.db.anchor")
    log = IncidentLog(database, clock=Clock(), key=KEY, anchor_stores=(anchor,))
    write_events(log, 6)
    log.anchor_now()
    forger = attacker(database)
    forger.execute("UPDATE events SET actor = 'mallory' WHERE id = 2")
    recompute_chain(forger, lambda *content: event_mac(KEY, *content))
    report = log.verify()
    assert report.broken_at == 6
    assert "event #6 does not match the anchor of 04:12 UTC on 2026-11-30 (file)" in report.reason


def held_lease(kube: FakeKube, holder: str) -> None:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kube.add({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
              "metadata": {"name": "meshbot-scheduler", "namespace": "meshbot"},
              "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": now, "acquireTime": now,
                       "leaseTransitions": 0}})


def lease_anchor(kube: FakeKube, log: IncidentLog) -> dict:
    lease = kube.object("Lease", "meshbot", "meshbot-scheduler")
    return json.loads(lease["metadata"]["annotations"][f"meshbot.io/audit-head.{log.seal().log_id}"])


def test_the_head_is_anchored_on_the_lease_and_a_truncation_is_reported_against_it(database, kube: FakeKube):
    held_lease(kube, "meshbot-a")
    elector = LeaderElector(kube.client(), "meshbot", "meshbot-a")
    assert elector.tick()
    log = IncidentLog(database, clock=Clock(), key=KEY, anchor_stores=(LeaseAnchorStore(elector),))
    write_events(log, 4)
    log.anchor_now()
    anchor = lease_anchor(kube, log)
    assert (anchor["event"], anchor["log"]) == (4, log.seal().log_id) and anchor["mac"]
    lease = kube.object("Lease", "meshbot", "meshbot-scheduler")
    assert lease["spec"]["holderIdentity"] == "meshbot-a" and elector.tick(), "anchoring leaves the lease alone"
    attacker(database).execute("DELETE FROM events WHERE id = 4")
    report = log.verify()
    assert "chain ends at #3 but the anchor of 04:12 UTC on 2026-11-30 (lease) names #4" in report.reason


def test_the_lease_anchor_is_found_by_the_next_pod_whose_name_differs(database, kube: FakeKube):
    # The pod name changes at every restart; the anchor is the log's (its sealed identity), not the pod's.
    held_lease(kube, "meshbot-7d9f-abcde")
    first = LeaderElector(kube.client(), "meshbot", "meshbot-7d9f-abcde")
    assert first.tick()
    log = IncidentLog(database, clock=Clock(), key=KEY, anchor_stores=(LeaseAnchorStore(first),))
    write_events(log, 5)
    log.anchor_now()
    attacker(database).execute("DELETE FROM events WHERE id > 2")
    restarted = LeaderElector(kube.client(), "meshbot", "meshbot-7d9f-xyz12")
    report = IncidentLog(database, clock=Clock(), key=KEY, anchor_stores=(LeaseAnchorStore(restarted),)).verify()
    assert report.reason.startswith("chain ends at #2 but the anchor of 04:12 UTC on 2026-11-30 (lease) names #5")


def test_another_logs_anchor_on_the_lease_is_not_compared_with_this_database(database, kube: FakeKube, tmp_path):
    held_lease(kube, "meshbot-b")
    leader = LeaderElector(kube.client(), "meshbot", "meshbot-b")
    assert leader.tick()
    other = Database(tmp_path / "other.db", MIGRATIONS)
    other.migrate()
    theirs = IncidentLog(other, clock=Clock(), key=KEY, anchor_stores=(LeaseAnchorStore(leader),))
    write_events(theirs, 40)
    theirs.anchor_now()  # meshbot-b's own, longer chain
    log = IncidentLog(database, clock=Clock(), key=KEY, anchor_stores=(LeaseAnchorStore(leader),))
    write_events(log, 3)
    assert log.verify().intact
    assert log.anchor_now().event_id == 3 and lease_anchor(kube, theirs)["event"] == 40


def test_the_head_is_anchored_again_on_a_state_change_and_otherwise_every_few_minutes(database, tmp_path):
    clock = Clock()
    anchor = FileAnchorStore(tmp_path / "meshbot.db.anchor")
    log = IncidentLog(database, clock=clock, key=KEY, anchor_stores=(anchor,), anchor_every=timedelta(minutes=5))
    write_events(log, 2)
    assert log.anchor_if_due().event_id == 2
    write_events(log, 1)
    assert log.anchor_if_due() is None  # a note is no state change, and 5 minutes have not passed
    log.record(None, "alertmanager", EventKind.STATE_CHANGED, {"from": "open", "to": "resolved"})
    assert log.anchor_if_due().event_id == 4
    write_events(log, 1)
    clock.now += timedelta(minutes=6)
    assert log.anchor_if_due().event_id == 5
    assert anchor.latest(log.seal().log_id).event_id == 5


def test_resolving_an_incident_posts_the_head_in_the_audit_channel_never_in_its_thread(database, fake_slack):
    clock = Clock()
    log = IncidentLog(database, clock=clock, key=KEY, anchor_stores=())
    outbox = Outbox(database, SlackClient(build_web_client(BOT_TOKEN, fake_slack.api_url, max_retries=0)),
                    record=IncidentDeliveries(log, audit_channel="CAUDIT"), min_post_interval=0.0, clock=clock)
    with database.transaction() as db:
        incident_id = log.create(db, group_key="g", title="IstiodDown", severity="critical", channel=CHANNEL,
                                 labels={}, namespaces=[], services=[], external_url="", playbook=None)
        log.append(db, incident_id, "alertmanager", EventKind.INCIDENT_OPENED, {"group_key": "g"})
        top = outbox.post(db, incident_id=incident_id, channel=CHANNEL, message=Message("IstiodDown", []))
        log.set_top_message(db, incident_id, top)
    outbox.deliver_due()
    outbox.deliver_due()
    [top_post] = fake_slack.messages(top_level=True)
    assert fake_slack.messages(thread_ts=top_post["_ts"]) == []  # the triage is a new thread's first reply

    with database.transaction() as db:
        log.close(db, incident_id, "alertmanager", "all alerts of the group resolved")
    head = log.head()
    outbox.deliver_due()
    outbox.deliver_due()
    assert fake_slack.messages(thread_ts=top_post["_ts"]) == [], "audit anchors stay out of human threads"
    [anchor] = [m["text"] for m in fake_slack.messages(top_level=True) if m["channel"] == "CAUDIT"]
    assert anchor == (f"Audit log head: event #{head.event_id} \u00b7 {head.hash_prefix} (2026-11-30T04:12:00Z) "
                      f"\u00b7 incidents #{incident_id} changed state")
    assert list(database.db.query("SELECT kind FROM events WHERE id = ?", [head.event_id]))[0]["kind"] == \
        "state_changed"


# -- databases written before the audit key ------------------------------------------------------------


def legacy_database(tmp_path, events: int) -> Database:
    """A database as meshbot wrote it before the audit key: schema 1–4 and a plain SHA-256 chain."""
    old = Database(tmp_path / "meshbot.db", MIGRATIONS[:4])
    old.migrate()
    prev = GENESIS
    with old.transaction() as db:
        for i in range(events):
            at, data = f"2026-01-01T00:00:{i:02d}Z", json.dumps({"n": i})
            digest = event_hash(prev, None, at, "alertmanager", "note", data)
            db.execute("INSERT INTO events (incident_id, at, actor, kind, data, prev_hash, hash) "
                       "VALUES (NULL, ?, 'alertmanager', 'note', ?, ?, ?)", [at, data, prev, digest])
            prev = digest
    old.close()
    upgraded = Database(tmp_path / "meshbot.db", MIGRATIONS)
    upgraded.migrate()
    return upgraded


def test_events_from_before_the_audit_key_stay_valid_as_an_unkeyed_prefix(tmp_path):
    database = legacy_database(tmp_path, 7)
    log = IncidentLog(database, key=KEY, anchor_stores=())
    write_events(log, 3)
    report = log.verify()
    assert report.intact and report.events == 10 and report.unkeyed == 7
    assert "events 1\u20137 are unkeyed (written before the audit key)" in "\n".join(report.lines())
    eighth = list(database.db.query("SELECT * FROM events WHERE id = 8"))[0]
    plain = event_hash(eighth["prev_hash"], None, eighth["at"], eighth["actor"], eighth["kind"], eighth["data"])
    assert eighth["hash"] != plain  # from the key on, events are HMACs


def test_an_edit_in_the_legacy_prefix_is_still_detected(tmp_path):
    database = legacy_database(tmp_path, 4)
    log = IncidentLog(database, key=KEY, anchor_stores=())
    write_events(log, 2)
    attacker(database).execute("UPDATE events SET actor = 'mallory' WHERE id = 2")
    report = log.verify()
    assert report.broken_at == 2 and "content does not match its hash (the event was edited)" in report.reason


def test_stretching_the_legacy_prefix_over_a_recomputed_chain_is_caught_by_the_anchor(tmp_path):
    database = legacy_database(tmp_path, 3)
    anchor = FileAnchorStore(tmp_path / "meshbot.db.anchor")
    log = IncidentLog(database, clock=Clock(), key=KEY, anchor_stores=(anchor,))
    write_events(log, 3)
    log.anchor_now()
    forger = attacker(database)
    forger.execute("DROP TRIGGER audit_chain_legacy_fixed")
    forger.execute("UPDATE audit_chain SET legacy_until = 6")
    forger.execute("UPDATE events SET actor = 'mallory' WHERE id = 5")
    recompute_chain(forger, event_hash)
    report = log.verify()
    assert not report.intact and report.broken_at == 0
    assert "the audit seal does not hold: the legacy boundary" in report.lines()[0]


# -- the key ---------------------------------------------------------------------------------------


def test_without_a_configured_key_one_is_generated_next_to_the_database_with_mode_0600(tmp_path, caplog):
    db_path = tmp_path / "data" / "meshbot.db"
    db_path.parent.mkdir()
    with caplog.at_level(logging.WARNING):
        key = load_audit_key(None, db_path)
    path = audit_key_path(db_path)
    assert path.parent == db_path.parent and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"generated a new audit key at {path}" in caplog.text
    assert key.secret.decode() not in caplog.text
    caplog.clear()
    assert load_audit_key(None, db_path) == key  # the second start reads it back, silently
    assert "generated" not in caplog.text


def test_a_configured_key_wins_over_the_generated_file_and_verify_needs_the_same_key(database, tmp_path):
    configured = load_audit_key("c" * 32, database.path)
    assert configured.source == "MESHBOT_AUDIT_KEY" and not audit_key_path(database.path).exists()
    write_events(IncidentLog(database, key=configured, anchor_stores=()), 2)
    assert IncidentLog(database, key=configured, anchor_stores=()).verify().intact
    assert not IncidentLog(database, key=KEY, anchor_stores=()).verify().intact


def test_a_short_audit_key_is_refused_by_name_without_echoing_it(tmp_path):
    with pytest.raises(SettingsError) as refused:
        Settings.load({"MESHBOT_AUDIT_KEY": "hunter2-hunter2"})
    assert "MESHBOT_AUDIT_KEY" in str(refused.value) and "hunter2" not in str(refused.value)
    key_file = tmp_path / "audit-key"
    key_file.write_text("f" * 64 + "\n")
    assert Settings.load({"MESHBOT_AUDIT_KEY_FILE": str(key_file)}).audit_key == "f" * 64
    with pytest.raises(UserError):
        load_audit_key("short", tmp_path / "x.db")


# -- approval plans bound to their request ------------------------------------------------------------


@pytest.fixture
def cluster(kube: FakeKube) -> FakeKube:
    kube.add(namespace("payments"), namespace("kube-system"), namespace("istio-system"),
             deployment("istiod", "istio-system"), istiod_pod())
    return kube


@pytest.fixture
def action_bot(bot_factory, cluster, istiod_server, fake_slack, tmp_path):
    config = write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
    istiod_server.answer("/debug/syncz", [syncz_entry("reviews-1.payments")])

    def start():
        meshbot = bot_factory(scenario=None, kubeconfig=config, kube_context="kmock", kube_timeout=2.0,
                              approvers=APPROVERS, required_approvals=2, channel="CINCIDENT",
                              istiod_url=istiod_server.url)
        meshbot.services.approvals.effects.settle = timedelta(0)  # as tests/test_approvals.py: no push to wait for
        meshbot.services.outbox.min_post_interval = 0.0  # nor Slack's per-channel pacing (tests/test_outbox.py)
        return meshbot
    return start


def test_a_plan_edited_in_the_database_with_its_plain_hash_recomputed_does_not_execute(action_bot, cluster,
                                                                                       fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments --reason 503s after root rotation")
    plan = json.loads(meshbot.database.db.execute("SELECT plan FROM approval_requests WHERE id = ?",
                                                  [request_id]).fetchone()[0])
    for change in plan["changes"]:
        change["namespace"] = "kube-system"
        if change.get("body"):
            change["body"]["metadata"]["namespace"] = "kube-system"
    forged = Plan.from_dict(plan)
    connection = sqlite3.connect(meshbot.database.path, isolation_level=None)
    connection.execute("UPDATE approval_requests SET plan = ?, plan_hash = ? WHERE id = ?",
                       [forged.canonical_json(), forged.hash, request_id])
    connection.close()

    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    done = wait_finished(meshbot, fake_slack, request_id)
    assert done.state == RequestState.FAILED and done.applied == 0
    assert "not the one approved for this request" in done.result["error"]
    assert cluster.object("PeerAuthentication", "kube-system", EMERGENCY_POLICY) is None
    assert cluster.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is None
    failed = [e for e in IncidentLog(meshbot.database).timeline(done.incident_id) if e.kind == "action_failed"]
    assert failed and "binding with the audit key fails" in failed[0].data["error"]


def test_an_untouched_bound_plan_executes(action_bot, cluster, fake_slack):
    meshbot = action_bot()
    request_id, _ = ask(meshbot, fake_slack, "permissive-mtls payments --reason 503s after root rotation")
    approve(meshbot, fake_slack, request_id, "UBOB", "UCAROL")
    assert wait_finished(meshbot, fake_slack, request_id).state == RequestState.SUCCEEDED
    assert cluster.object("PeerAuthentication", "payments", EMERGENCY_POLICY) is not None


# -- the seal: legacy boundary, log identity, key check value (issue 24 item 2) --------------------------


def test_stretching_the_legacy_prefix_with_no_anchor_anywhere_is_caught_by_the_seal(backend_database):
    log = IncidentLog(backend_database, key=KEY, anchor_stores=())
    write_events(log, 4)
    with backend_database.transaction() as db:  # a database writer: triggers are no obstacle to the owner
        for trigger in ("audit_chain_legacy_fixed", "events_no_update"):
            db.execute(f"DROP TRIGGER {trigger} ON audit_chain" if trigger.startswith("audit") and
                       backend_database.dialect == "postgresql" else
                       f"DROP TRIGGER {trigger}" + (" ON events" if backend_database.dialect == "postgresql" else ""))
        db.execute("UPDATE audit_chain SET legacy_until = 4")
        db.execute("UPDATE events SET actor = 'mallory' WHERE id = 2")
        prev = GENESIS
        for row in list(db.query("SELECT id, incident_id, at, actor, kind, data FROM events ORDER BY id")):
            digest = event_hash(prev, row["incident_id"], row["at"], row["actor"], row["kind"], row["data"])
            db.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", [prev, digest, row["id"]])
            prev = digest
    report = log.verify()
    assert (report.intact, report.broken_at) == (False, 0)
    assert "the audit seal does not hold" in report.lines()[0]


def test_clearing_the_seal_to_pretend_the_log_predates_the_key_is_reported(database):
    log = IncidentLog(database, key=KEY, anchor_stores=())
    write_events(log, 3)
    attacker(database).execute("UPDATE audit_chain SET seal = NULL")
    report = log.verify()
    assert not report.intact and "the log is not sealed with the audit key" in report.lines()[0]


def test_a_log_created_keyed_never_accepts_an_unkeyed_event(database):
    log = IncidentLog(database, key=KEY, anchor_stores=())
    write_events(log, 3)
    forger = attacker(database)
    prev = forger.execute("SELECT hash FROM events WHERE id = 3").fetchone()[0]
    content = (None, "2026-11-30T05:00:00Z", "mallory", "note", "{}")
    forger.execute("INSERT INTO events (incident_id, at, actor, kind, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, "
                   "?)", [*content, prev, event_hash(prev, *content)])
    report = log.verify()
    assert report.broken_at == 4 and "recomputed without the key" in report.reason


def test_verify_with_a_wrong_key_says_wrong_audit_key_not_tampered(backend_database):
    write_events(IncidentLog(backend_database, key=KEY, anchor_stores=()), 3)
    other = AuditKey(b"o" * 40, "MESHBOT_AUDIT_KEY")
    report = IncidentLog(backend_database, key=other, anchor_stores=()).verify()
    assert not report.intact and report.broken_at is None
    [line] = report.lines()
    assert line.startswith(f"wrong audit key: this log is signed with the key whose check value is {KEY.check}")
    assert "TAMPERED" not in line


def test_writing_with_a_wrong_key_is_refused_instead_of_forking_the_log(backend_database):
    write_events(IncidentLog(backend_database, key=KEY, anchor_stores=()), 2)
    other = IncidentLog(backend_database, key=AuditKey(b"o" * 40, "MESHBOT_AUDIT_KEY"), anchor_stores=())
    assert other.startup_problem().startswith("wrong audit key")
    with pytest.raises(AuditKeyError, match="wrong audit key"):
        write_events(other, 1)
    assert backend_database.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2


def test_a_log_restored_without_its_key_file_refuses_to_start_a_new_key(tmp_path):
    database = Database(tmp_path / "meshbot.db", MIGRATIONS)
    database.migrate()
    write_events(IncidentLog(database, anchor_stores=()), 2)  # the key generated next to the database
    audit_key_path(database.path).unlink()  # the backup restored the database, not the key
    restored = IncidentLog(database, anchor_stores=())
    problem = restored.startup_problem()
    assert problem.startswith("the incident log holds events signed with an audit key but none is configured")


def test_an_edited_incident_title_severity_or_resolver_is_reported_against_the_log(backend_database):
    log = IncidentLog(backend_database, key=KEY, anchor_stores=())
    with backend_database.transaction() as db:
        incident_id = log.create(db, group_key="g", title="IstiodDown", severity="critical", channel=CHANNEL,
                                 labels={}, namespaces=[], services=[], external_url="", playbook=None)
        log.append(db, incident_id, "alertmanager", EventKind.INCIDENT_OPENED, {"group_key": "g"})
        log.close(db, incident_id, "UALICE", "fixed")
    assert log.verify().intact
    with backend_database.transaction() as db:
        db.execute("UPDATE incidents SET title = 'nothing happened', severity = 'info', resolved_by = 'UBOB'")
    report = log.verify()
    assert not report.intact and report.broken_at is None
    text = "\n".join(report.lines())
    assert "row(s) or alarm(s) disagree with it" in text
    assert f"incident #{incident_id}: title is 'nothing happened' in the table but 'IstiodDown' in the log" in text
    assert f"incident #{incident_id}: resolved_by is 'UBOB' in the table but 'UALICE' in the log" in text


# -- anchors: signed, an ancestor of the head, or an alarm --------------------------------------------


def test_a_file_anchor_rewritten_to_match_a_truncated_chain_is_reported_as_forged(database, tmp_path):
    anchor = FileAnchorStore(tmp_path / "meshbot.db.anchor")
    log = IncidentLog(database, clock=Clock(), key=KEY, anchor_stores=(anchor,))
    write_events(log, 6)
    log.anchor_now()
    attacker(database).execute("DELETE FROM events WHERE id > 3")
    written = json.loads(anchor.path.read_text())
    head = database.db.execute("SELECT hash FROM events WHERE id = 3").fetchone()[0]
    anchor.path.write_text(json.dumps({**written, "event": 3, "hash": head[:16], "mac": "0" * 64}))
    report = log.verify()
    assert not report.intact
    assert "the file anchor naming event #3 is forged: its HMAC does not match the audit key" in report.findings


def test_after_an_offline_truncation_the_next_start_raises_an_alarm_instead_of_anchoring_the_shorter_chain(
        database, tmp_path):
    anchor = FileAnchorStore(tmp_path / "meshbot.db.anchor")
    write_events(IncidentLog(database, clock=Clock(), key=KEY, anchor_stores=(anchor,)), 8)
    IncidentLog(database, clock=Clock(), key=KEY, anchor_stores=(anchor,)).anchor_now()
    attacker(database).execute("DELETE FROM events WHERE id > 5")  # while meshbot is stopped
    alarms: list[str] = []
    restarted = IncidentLog(database, clock=Clock(), key=KEY, anchor_stores=(anchor,),
                            on_alarm=lambda db, message: alarms.append(message))
    write_events(restarted, 1)
    restarted.anchor_if_due()
    assert anchor.latest(restarted.seal().log_id).event_id == 8, "the evidence is left in place"
    assert alarms and "the file anchor (event #8) is not an ancestor of the log's head" in alarms[0]
    assert "events were deleted" in alarms[0]
    report = restarted.verify()
    assert not report.intact and "names #8" in report.reason


def test_an_idle_tail_is_anchored_by_anchor_now_although_anchor_if_due_waits(database, tmp_path):
    # anchor_if_due waits ANCHOR_EVERY between notes; shutdown (Meshbot.stop) anchors whatever is left.
    anchor = FileAnchorStore(tmp_path / "meshbot.db.anchor")
    log = IncidentLog(database, clock=Clock(), key=KEY, anchor_stores=(anchor,))
    write_events(log, 2)
    log.anchor_if_due()
    write_events(log, 3)
    assert log.anchor_if_due() is None
    log.anchor_now()
    assert anchor.latest(log.seal().log_id).event_id == 5


# -- key rotation (issue 24 item 3) ---------------------------------------------------------------------


NEW_KEY = AuditKey(b"n" * 40, "new")


def test_a_rotated_log_verifies_with_both_keys_and_names_what_the_new_key_alone_cannot_check(backend_database):
    log = IncidentLog(backend_database, key=KEY, anchor_stores=())
    write_events(log, 3)
    rotation = log.rotate_key(NEW_KEY, "operator")
    write_events(log, 2)
    assert IncidentLog(backend_database, key=NEW_KEY, previous_keys=(KEY,), anchor_stores=()).verify().intact
    alone = IncidentLog(backend_database, key=NEW_KEY, anchor_stores=()).verify()
    assert alone.intact and alone.events == 6
    assert f"not checked: events 1\u2013{rotation - 1} are signed with an earlier key (check value {KEY.check})" \
        in "\n".join(alone.lines())
    assert IncidentLog(backend_database, key=KEY, anchor_stores=()).verify().wrong_key


def test_a_rotation_event_forged_by_a_database_writer_is_detected(database):
    log = IncidentLog(database, key=KEY, anchor_stores=())
    write_events(log, 3)
    forger = attacker(database)
    prev = forger.execute("SELECT hash FROM events WHERE id = 3").fetchone()[0]
    content = (None, "2026-11-30T05:00:00Z", "mallory", "audit_key_rotated",
               json.dumps({"from": KEY.check, "to": "feedfacefeedface", "previous_rotation": 0, "proof": "0"}))
    forger.execute("INSERT INTO events (incident_id, at, actor, kind, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, "
                   "?)", [*content, prev, event_hash(prev, *content)])
    report = log.verify()
    assert report.broken_at == 4 and "the seal names key rotation #0 but the log's newest is #4" in report.reason
