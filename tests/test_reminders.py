"""Certificate-expiry reminders: certificates minted here, served by kmock's API server, posted to the
fake Slack; time travels through ``scan(now)``, ``--now`` and injected clocks, never by sleeping."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.reminders.scheduler import MISFIRE_GRACE, SCAN_JOB, CertificateScheduler, SchedulerCollector
from commands.certificates.inventory import CertRole
from commands.certificates.reminders import Expiry, LedgerError, decode_ledger, due, encode_ledger
from commands.clients.lease import LeaderElector
from tests.support.certs import Minted, mint
from tests.support.kube import FakeKube, write_kubeconfig
from tests.support.slack import FakeSlack, post_signed, slash_command_body
from tests.test_certs import ingress_gateway, root_configmap, secret

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(timezone.utc).replace(microsecond=0)


# -- which reminders are due (pure) ------------------------------------------------------------


def expiry(days_left: int, key: str = "AA:BB") -> Expiry:
    return Expiry(key=key, what="Mesh root CA", role=CertRole.MESH_ROOT, origin="ConfigMap istio-system/x",
                  subject="CN=root", sans=(), serial="1", not_after=NOW + timedelta(days=days_left),
                  days_left=days_left, namespaces=(), dependents=(), renewal="rotate", renewal_command=None,
                  expired=days_left < 0)


def slots(days_left: int, sent: set, today: date = date(2026, 11, 23), key: str = "AA:BB") -> list[str]:
    return [r.slot for r in due([expiry(days_left, key)], today, sent)]


def test_nothing_is_due_before_the_first_threshold():
    assert slots(91, set()) == []


def test_each_threshold_is_due_once():
    assert slots(90, set()) == ["90d"]
    assert slots(89, {("AA:BB", "90d")}) == []
    assert slots(30, {("AA:BB", "90d")}) == ["30d"]
    assert slots(7, {("AA:BB", "90d"), ("AA:BB", "30d")}) == ["7d"]


def test_a_certificate_found_late_gets_only_the_nearest_threshold():
    assert slots(20, set()) == ["30d"]


def test_inside_the_last_threshold_and_after_expiry_one_reminder_a_day():
    sent = {("AA:BB", "90d"), ("AA:BB", "30d"), ("AA:BB", "7d"), ("AA:BB", "day:2026-11-23")}
    assert slots(6, sent) == []
    assert slots(5, sent, today=date(2026, 11, 24)) == ["day:2026-11-24"]
    assert slots(-3, sent, today=date(2026, 11, 30)) == ["day:2026-11-30"]


def test_a_renewed_certificate_is_a_new_key_and_starts_over():
    sent = {("AA:BB", "90d"), ("AA:BB", "30d")}
    assert slots(25, sent, key="CC:DD") == ["30d"]


def test_the_shared_ledger_round_trips_what_can_still_matter():
    sent = {("AA:BB", "90d"), ("AA:BB", "day:2026-11-23"), ("AA:BB", "day:2026-11-22"), ("CC:DD", "incident")}
    assert decode_ledger(encode_ledger(sent, ["AA:BB", "CC:DD"], date(2026, 11, 23))) == sent


def test_the_shared_ledger_drops_old_daily_slots_and_certificates_no_longer_there():
    sent = {("AA:BB", "7d"), ("AA:BB", "day:2026-11-21"), ("AA:BB", "day:2026-11-22"), ("GONE", "90d")}
    assert decode_ledger(encode_ledger(sent, ["AA:BB"], date(2026, 11, 23))) == {
        ("AA:BB", "7d"), ("AA:BB", "day:2026-11-22")}


@pytest.mark.parametrize("text, reason", [
    ("{not json", "not JSON"),
    ('{"format": 2, "sent": {}}', "expected"),
    ('{"format": 1, "sent": {"AA:BB": "90d"}}', "not a list of strings"),
])
def test_a_malformed_shared_ledger_is_refused_with_the_reason(text, reason):
    with pytest.raises(LedgerError, match=reason):
        decode_ledger(text)


# -- against an emulated cluster, posted to the fake Slack ---------------------------------------


def mesh_with(kube: FakeKube, root: Minted, gateway_cert: Minted | None = None) -> None:
    kube.add(root_configmap("istio-system", root), root_configmap("payments", root))
    if gateway_cert is not None:
        kube.add(*ingress_gateway("shop-tls"), secret("istio-system", "shop-tls", tls_crt=gateway_cert.cert_pem))


@pytest.fixture
def reminder_bot(bot_factory, kube, tmp_path):
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)

    def start(**overrides):
        settings = dict(scenario=None, kubeconfig=config, kube_context="kmock", kube_timeout=2.0,
                        channel="CINCIDENT", reminders=True)
        settings.update(overrides)
        return bot_factory(**settings)
    return start


def reminders_posted(fake_slack: FakeSlack) -> list[dict]:
    return [m for m in fake_slack.messages() if m["text"].startswith("Certificate reminder")]


def scan(meshbot, fake_slack: FakeSlack, at: datetime) -> list[str]:
    """Scan as of ``at``; returns the texts of the reminders it posted."""
    before = len(reminders_posted(fake_slack))
    result = meshbot.services.reminders.scan(at)
    fake_slack.wait_for(lambda: len(reminders_posted(fake_slack)) >= before + len(result.due) or None, timeout=20,
                        what="the reminders to be delivered")
    return [m["text"] for m in reminders_posted(fake_slack)[before:]]


def wait_startup_scan(meshbot, fake_slack: FakeSlack) -> None:
    fake_slack.wait_for(lambda: meshbot.scheduler.scans >= 1, what="the start-up scan")


def test_90_30_and_7_day_reminders_are_posted_once_each_also_across_a_restart(reminder_bot, kube, fake_slack):
    root = mint("Istio CA", is_ca=True, organization="cluster.local", days=120)
    mesh_with(kube, root)
    first = reminder_bot()
    wait_startup_scan(first, fake_slack)
    assert reminders_posted(fake_slack) == [], "120 days left: nothing yet"

    expires = root.cert.not_valid_after_utc
    [ninety] = scan(first, fake_slack, expires - timedelta(days=90))
    assert "90-day reminder" in ninety and 'Mesh root CA "CN=Istio CA,O=cluster.local"' in ninety
    assert scan(first, fake_slack, expires - timedelta(days=89)) == []
    first.stop()

    second = reminder_bot()
    wait_startup_scan(second, fake_slack)
    assert scan(second, fake_slack, expires - timedelta(days=85)) == [], "a restart does not repeat"
    [thirty] = scan(second, fake_slack, expires - timedelta(days=30))
    assert "30-day reminder" in thirty
    seven_at = expires - timedelta(days=7)
    [seven] = scan(second, fake_slack, seven_at)
    assert "7-day reminder" in seven
    # Up to an hour later on the same UTC date (a daily reminder's slot is the UTC date: the certificate was minted
    # at the test's time of day, and after 23:00 UTC "an hour later" is tomorrow, whose daily reminder is due).
    later_that_day = min(seven_at + timedelta(hours=1), seven_at.replace(hour=23, minute=59, second=59))
    assert scan(second, fake_slack, later_that_day) == []
    [daily] = scan(second, fake_slack, expires - timedelta(days=6))
    assert "daily reminder" in daily
    with sqlite3.connect(second.settings.db_path) as db:
        assert {row[0] for row in db.execute("SELECT slot FROM reminders_sent")} >= {"90d", "30d", "7d"}


def test_a_reminder_names_the_certificate_its_expiry_dependents_and_how_to_renew(reminder_bot, kube, fake_slack):
    root = mint("Istio CA", is_ca=True, days=400)
    gateway = mint("shop.example.com", dns_names=("shop.example.com",), issuer=root, days=200)
    mesh_with(kube, root, gateway)
    meshbot = reminder_bot()
    wait_startup_scan(meshbot, fake_slack)
    assert len(scan(meshbot, fake_slack, gateway.cert.not_valid_after_utc - timedelta(days=29, hours=1))) == 1
    blocks = str(reminders_posted(fake_slack)[-1]["blocks"])
    for expected in ('Gateway TLS certificate "CN=shop.example.com"', "29 day(s) left", "30-day reminder",
                     "SANs:* shop.example.com", f"Serial:* {gateway.serial_hex}",
                     f"{gateway.cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
                     "Gateway prod/public-gateway port 443", "kubectl -n istio-system create secret tls shop-tls"):
        assert expected in blocks, expected


def test_a_renewed_certificate_starts_its_reminders_over(reminder_bot, kube, fake_slack):
    old = mint("Istio CA", is_ca=True, days=100)
    mesh_with(kube, old)
    meshbot = reminder_bot()
    wait_startup_scan(meshbot, fake_slack)
    assert len(scan(meshbot, fake_slack, old.cert.not_valid_after_utc - timedelta(days=25))) == 1

    renewed = mint("Istio CA", is_ca=True, not_after=old.cert.not_valid_after_utc + timedelta(days=5))
    kube.add(root_configmap("istio-system", renewed), root_configmap("payments", renewed))
    # meshbot serve reads ConfigMaps through its watched cluster view: the renewal arrives as a watch event, a
    # moment after the write, as it would from a real API server.
    [again] = fake_slack.wait_for(
        lambda: scan(meshbot, fake_slack, old.cert.not_valid_after_utc - timedelta(days=25)) or None, timeout=20,
        what="a scan that sees the renewed root")
    assert f"{renewed.cert.not_valid_after_utc:%Y-%m-%d}" in str(reminders_posted(fake_slack)[-1]["blocks"])
    assert "30-day reminder" in again


def test_an_expired_mesh_root_opens_one_incident_with_its_own_thread(reminder_bot, kube, fake_slack):
    root = mint("Istio CA", is_ca=True, days=50)
    mesh_with(kube, root)
    meshbot = reminder_bot()
    wait_startup_scan(meshbot, fake_slack)
    after = root.cert.not_valid_after_utc + timedelta(hours=2)
    result = meshbot.services.reminders.scan(after)
    assert len(result.incidents_opened) == 1
    incident = meshbot.incident_flow.incidents.get(result.incidents_opened[0])
    assert incident.title.endswith("has expired") and incident.severity == "critical"
    top = fake_slack.wait_for(lambda: [m for m in fake_slack.messages(top_level=True)
                                       if "has expired" in m["text"]], what="the incident message")[0]
    fake_slack.wait_for(lambda: fake_slack.messages(thread_ts=top["_ts"]), timeout=20,
                        what="diagnostics in the incident thread")
    assert meshbot.services.reminders.scan(after + timedelta(days=1)).incidents_opened == []
    assert len(meshbot.incident_flow.incidents.list_open()) == 1


def test_two_replicas_with_leader_election_post_each_reminder_once(reminder_bot, kube, fake_slack, tmp_path):
    root = mint("Istio CA", is_ca=True, days=60)
    mesh_with(kube, root)
    a = reminder_bot(leader_election=True, pod_name="meshbot-a", lease_namespace="meshbot",
                     db_path=str(tmp_path / "a.db"))
    fake_slack.wait_for(lambda: a.scheduler.elector.is_leader, what="replica a to lead")
    b = reminder_bot(leader_election=True, pod_name="meshbot-b", lease_namespace="meshbot",
                     db_path=str(tmp_path / "b.db"))
    wait_startup_scan(a, fake_slack)
    assert not b.scheduler.run_scan("test"), "the follower does not scan"
    fake_slack.wait_for(lambda: len(reminders_posted(fake_slack)) == 1, what="the leader's reminder")
    assert kube.object("Lease", "meshbot", "meshbot-scheduler")["spec"]["holderIdentity"] == "meshbot-a"

    a.stop()  # releases the lease
    assert b.scheduler.run_scan("test"), "the other replica takes over at once"
    assert kube.object("Lease", "meshbot", "meshbot-scheduler")["spec"]["holderIdentity"] == "meshbot-b"
    # b has a database of its own: only the ledger a left on the Lease stops it posting the 90-day reminder again.
    assert "meshbot.io/reminders-sent" in kube.object("Lease", "meshbot", "meshbot-scheduler")["metadata"]["annotations"]
    assert len(reminders_posted(fake_slack)) == 1
    assert b.services.reminders.scan(datetime.now(timezone.utc) + timedelta(days=31)).due, "b posts what comes next"
    fake_slack.wait_for(lambda: len(reminders_posted(fake_slack)) == 2, what="the 30-day reminder from b")


def test_a_replica_that_finds_a_garbled_ledger_on_the_lease_posts_rather_than_stays_silent(
        reminder_bot, kube, fake_slack, tmp_path, caplog):
    mesh_with(kube, mint("Istio CA", is_ca=True, days=60))
    kube.add({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
              "metadata": {"name": "meshbot-scheduler", "namespace": "meshbot",
                           "annotations": {"meshbot.io/reminders-sent": "{garbled"}},
              "spec": {"leaseDurationSeconds": 15}})
    meshbot = reminder_bot(leader_election=True, pod_name="meshbot-a", lease_namespace="meshbot",
                           db_path=str(tmp_path / "a.db"))
    wait_startup_scan(meshbot, fake_slack)
    fake_slack.wait_for(lambda: len(reminders_posted(fake_slack)) == 1, what="the 90-day reminder")
    assert "ignoring annotation meshbot.io/reminders-sent on the Lease: not JSON" in caplog.text
    annotations = kube.object("Lease", "meshbot", "meshbot-scheduler")["metadata"]["annotations"]
    assert decode_ledger(annotations["meshbot.io/reminders-sent"]), "replaced by a well-formed ledger"


def test_the_daily_scan_is_a_persisted_job_at_the_configured_time(reminder_bot, fake_slack, kube):
    mesh_with(kube, mint("Istio CA", is_ca=True, days=400))
    meshbot = reminder_bot(timezone="Europe/Berlin", reminder_time="08:30")
    next_run = meshbot.scheduler.next_scan()
    assert (next_run.hour, next_run.minute, str(next_run.tzinfo)) == (8, 30, "Europe/Berlin")
    meshbot.stop()
    again = reminder_bot(timezone="Europe/Berlin", reminder_time="08:30")
    with sqlite3.connect(again.settings.db_path) as db:
        assert db.execute("SELECT id FROM apscheduler_jobs").fetchall() == [("certificate-scan",)]


def test_slash_reminders_lists_certificates_soonest_first(reminder_bot, kube, fake_slack):
    root = mint("Istio CA", is_ca=True, days=300)
    gateway = mint("shop.example.com", issuer=root, days=12)
    mesh_with(kube, root, gateway)
    meshbot = reminder_bot()
    name = "reminders"
    post_signed(f"{meshbot.url}/slack/events",
                slash_command_body("reminders", response_url=fake_slack.response_url(name)))
    answer = fake_slack.wait_for(lambda: fake_slack.answers_to(name), what="the list")[0]
    assert answer.index("shop.example.com") < answer.index("Istio CA")
    assert "12 day(s) left" in answer or "11 day(s) left" in answer


# -- the command line ------------------------------------------------------------------------


def test_remind_once_prints_what_would_be_posted_at_a_given_time(kube, tmp_path):
    root = mint("Istio CA", is_ca=True, days=45)
    mesh_with(kube, root)
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    freeze = root.cert.not_valid_after_utc - timedelta(days=3)
    env = {"KUBECONFIG": config, "MESHBOT_KUBE_CONTEXT": "kmock", "MESHBOT_DB": str(tmp_path / "none.db"),
           "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "remind", "--once", "--now", freeze.isoformat()],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "1 reminder(s) due" in result.stdout and "3 day(s) left (7-day reminder)" in result.stdout
    assert not (tmp_path / "none.db").exists(), "a read-only scan creates nothing"


# -- leader election on its own ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def electors(kube: FakeKube) -> tuple[LeaderElector, LeaderElector, Clock]:
    clock = Clock()
    # One clock for both, as wall time and as each elector's own elapsed time (how long it saw the record unchanged).
    make = lambda identity: LeaderElector(kube.client(), "meshbot", identity, duration=timedelta(seconds=15),  # noqa: E731
                                          clock=clock, elapsed=lambda: clock.now.timestamp())
    return make("a"), make("b"), clock


def test_one_replica_acquires_the_lease_and_the_other_waits(kube):
    a, b, clock = electors(kube)
    assert a.tick() and not b.tick()
    clock.now += timedelta(seconds=10)
    assert a.tick() and not b.tick(), "renewed in time"


def test_a_holder_that_stops_renewing_is_taken_over(kube):
    a, b, clock = electors(kube)
    assert a.tick() and not b.tick(), "b has seen a's record"
    clock.now += timedelta(seconds=16)
    assert b.tick(), "unchanged for longer than the lease, by b's own clock"
    lease = kube.object("Lease", "meshbot", "meshbot-scheduler")["spec"]
    assert lease["holderIdentity"] == "b" and lease["leaseTransitions"] == 1
    assert not a.tick(), "the old holder steps down"


def test_release_hands_over_without_waiting(kube):
    a, b, _ = electors(kube)
    assert a.tick()
    a.release()
    assert b.tick()


def test_the_holder_leaves_notes_on_the_lease_for_the_next_holder(kube):
    a, b, clock = electors(kube)
    assert a.tick() and a.annotate("meshbot.io/note", "hello")
    assert not b.annotate("meshbot.io/note", "overwritten"), "only the holder writes"
    clock.now += timedelta(seconds=16)
    assert b.tick() and b.annotation("meshbot.io/note") == "hello"


def test_an_api_error_means_follower_not_crash(kube):
    a, _, _ = electors(kube)
    kube.fail("Lease", 403, verb="get")
    assert not a.tick()



def test_a_replica_in_another_time_zone_does_not_repost_the_daily_reminder_on_the_same_real_day(
        reminder_bot, kube, fake_slack):
    root = mint("Istio CA", is_ca=True, days=400)  # nothing due at start-up
    mesh_with(kube, root)
    # 20:00 UTC: already tomorrow 09:00 in Auckland (UTC+13), still today 12:00 in Los Angeles (UTC-8).
    at = (root.cert.not_valid_after_utc - timedelta(days=5)).replace(hour=20, minute=0, second=0)
    auckland = reminder_bot(timezone="Pacific/Auckland")
    wait_startup_scan(auckland, fake_slack)
    [seven] = scan(auckland, fake_slack, at)
    assert "7-day reminder" in seven
    auckland.stop()

    los_angeles = reminder_bot(timezone="America/Los_Angeles")  # same database: the same ledger
    wait_startup_scan(los_angeles, fake_slack)
    assert scan(los_angeles, fake_slack, at + timedelta(hours=1)) == [], "one daily reminder per real (UTC) day"
    [next_day] = scan(los_angeles, fake_slack, at + timedelta(days=1))
    assert "daily reminder" in next_day


# -- the daily job in APScheduler's SQLite job store ----------------------------------------------------


class CountingScans:
    """Stands in for the ReminderService: the scheduler only calls ``scan()``."""

    def __init__(self) -> None:
        self.calls = 0

    def scan(self) -> None:
        self.calls += 1


def certificate_scheduler(db_path: Path, scans: CountingScans, **options) -> CertificateScheduler:
    options = {"at": (9, 0), "timezone": ZoneInfo("UTC"), "scan_at_start": False, **options}
    return CertificateScheduler(scans, str(db_path), **options)  # type: ignore[arg-type]


def store_scan_job_due(db_path: Path, due: datetime, func: str = "bot.reminders.scheduler:scheduled_scan",
                       at: tuple[int, int] = (9, 0)) -> None:
    """The stored daily job (daily at ``at`` UTC) as meshbot left it when it went down before ``due`` (the real
    job store)."""
    scheduler = BackgroundScheduler(timezone=ZoneInfo("UTC"))  # never started: only builds the Job
    job = Job(scheduler, id=SCAN_JOB, func=func,
              trigger=CronTrigger(hour=at[0], minute=at[1], timezone=ZoneInfo("UTC")),
              executor="default", args=[str(db_path)], kwargs={}, name="daily certificate scan",
              misfire_grace_time=int(MISFIRE_GRACE.total_seconds()), coalesce=True, max_instances=1,
              next_run_time=due)
    store = SQLAlchemyJobStore(url=f"sqlite:///{db_path}")
    store.start(scheduler, "default")
    store.add_job(job)
    store.shutdown()


def wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("func", ["bot.reminders.scheduler:scheduled_scan", "bot.scheduler:scheduled_scan"])
def test_a_daily_scan_missed_while_down_runs_once_at_start_through_the_job_stores_misfire_handling(tmp_path, func):
    db_path = tmp_path / "meshbot.db"
    store_scan_job_due(db_path, datetime.now(timezone.utc) - timedelta(hours=3), func)
    scans = CountingScans()

    scheduler = certificate_scheduler(db_path, scans, scan_at_start=True).start()
    try:
        wait_until(lambda: scans.calls >= 1, "the missed scan")
        assert scheduler.last_scan.trigger == "schedule"
        assert scheduler.next_scan() > datetime.now(timezone.utc), "then back on the daily schedule"
        time.sleep(0.3)
        assert scans.calls == 1, "coalesced: once, not once per missed day, and no second start-up scan"
    finally:
        scheduler.stop()


def test_a_scan_missed_by_more_than_the_grace_time_is_left_to_the_next_day(tmp_path):
    db_path = tmp_path / "meshbot.db"
    # The daily time is chosen so that its last occurrence is the missed one, more than the grace ago.  (A fixed
    # 09:00 made the test depend on the hour it ran: between 09:00 and 21:00 UTC today's 09:00 is also missed,
    # by less than the grace, and APScheduler rightly runs that one, coalesced.)
    missed = (datetime.now(timezone.utc) - MISFIRE_GRACE - timedelta(hours=1)).replace(minute=0, second=0,
                                                                                         microsecond=0)
    store_scan_job_due(db_path, missed, at=(missed.hour, 0))
    scans = CountingScans()

    scheduler = certificate_scheduler(db_path, scans, at=(missed.hour, 0)).start()
    try:
        wait_until(lambda: scheduler.next_scan() > datetime.now(timezone.utc), "the job to be rescheduled")
        assert scans.calls == 0, "the start-up scan (off here) is what covers a day missed for this long"
    finally:
        scheduler.stop()


def test_a_changed_scan_time_reschedules_the_stored_job(tmp_path):
    db_path = tmp_path / "meshbot.db"
    store_scan_job_due(db_path, datetime.now(timezone.utc) + timedelta(hours=1))
    scheduler = certificate_scheduler(db_path, CountingScans(), at=(6, 45),
                                      timezone=ZoneInfo("Europe/Berlin")).start()
    try:
        next_run = scheduler.next_scan()
        assert (next_run.hour, next_run.minute, str(next_run.tzinfo)) == (6, 45, "Europe/Berlin")
    finally:
        scheduler.stop()


# -- scheduled-work health (for /readyz and /metrics) ----------------------------------------------------


def test_a_forbidden_lease_shows_as_a_lease_error_in_health_and_metrics(kube, tmp_path):
    kube.fail("Lease", 403, verb="get")
    elector = LeaderElector(kube.client(), "meshbot", "meshbot-a")
    scheduler = certificate_scheduler(tmp_path / "meshbot.db", CountingScans(), elector=elector)
    assert not scheduler.run_scan("test")

    health = scheduler.describe()["scheduler"]

    assert health["lease"] == "error"
    assert "cannot get leases.coordination.k8s.io meshbot/meshbot-scheduler: forbidden" in health["lease_error"]
    samples = scraped(scheduler)
    assert samples["meshbot_scheduler_lease_error"] == 1 and samples["meshbot_scheduler_lease_held"] == 0


def test_a_lease_that_times_out_shows_as_a_lease_error(kube, tmp_path):
    kube.slow("Lease", 3, verb="get", namespace="meshbot")
    elector = LeaderElector(kube.client(timeout=1.0), "meshbot", "meshbot-a")
    scheduler = certificate_scheduler(tmp_path / "meshbot.db", CountingScans(), elector=elector)
    assert not scheduler.run_scan("test")
    assert "no answer within 1s" in scheduler.health().lease_error


def test_a_held_lease_and_a_scan_show_in_health_and_metrics_without_an_error(kube, tmp_path):
    elector = LeaderElector(kube.client(), "meshbot", "meshbot-a")
    scheduler = certificate_scheduler(tmp_path / "meshbot.db", CountingScans(), elector=elector).start()
    try:
        assert scheduler.run_scan("test")
        health = scheduler.describe()["scheduler"]
        samples = scraped(scheduler)
    finally:
        scheduler.stop()
    assert (health["lease"], health["lease_error"], health["last_scan_ok"]) == ("held", None, True)
    assert samples["meshbot_scheduler_lease_held"] == 1 and samples["meshbot_scheduler_lease_error"] == 0
    assert samples["meshbot_scheduler_last_scan_success"] == 1
    assert samples["meshbot_scheduler_next_scan_timestamp_seconds"] > time.time()
    assert abs(samples["meshbot_scheduler_last_scan_timestamp_seconds"] - time.time()) < 60


def scraped(scheduler: CertificateScheduler) -> dict[str, float]:
    """The scheduler's gauges as Prometheus would scrape them (text exposition, parsed)."""
    registry = CollectorRegistry()
    registry.register(SchedulerCollector(scheduler))
    text = generate_latest(registry).decode()
    return {family.name: family.samples[0].value for family in text_string_to_metric_families(text)}
