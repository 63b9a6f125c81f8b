"""The scheduler inside ``meshbot serve``: the daily certificate scan, one at start-up, and leader election.

APScheduler keeps the daily job in the SQLite database (its SQLAlchemy job
store, table ``apscheduler_jobs``), so a scan missed while meshbot was down
runs once when it is back (coalesced), never twice, if it is less than
``MISFIRE_GRACE`` late: the stored job is kept as it is at start-up (replacing it
would move its next run past the missed one and the misfire would never be seen).
What each scan posted is in the reminder ledger (``bot.reminders.service``).  With
leader election on, every replica runs the same schedule but only the holder of the
Lease scans.  ``health()`` says how scheduled work is doing (Lease, last and next
scan), for ``/readyz`` (``describe``) and ``/metrics`` (``SchedulerCollector``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bot.reminders.service import ReminderService
from commands.clients.lease import LeaderElector

log = logging.getLogger(__name__)

SCAN_JOB = "certificate-scan"
MISFIRE_GRACE = timedelta(hours=12)

_RUNNING: dict[str, CertificateScheduler] = {}
"""Persisted jobs name a module-level function and an argument; this maps that argument (the database
path) back to the live scheduler of this process."""
_RUNNING_LOCK = threading.Lock()


def scheduled_scan(database_path: str) -> None:
    """The persisted job's target (APScheduler stores ``bot.reminders.scheduler:scheduled_scan`` and its argument)."""
    with _RUNNING_LOCK:
        scheduler = _RUNNING.get(database_path)
    if scheduler is None:
        log.warning("certificate scan fired for %s, which this process does not serve; skipped", database_path)
        return
    scheduler.run_scan("schedule")


class LeaseState(StrEnum):
    NOT_USED = "not used"
    HELD = "held"
    FOLLOWER = "held by another replica"
    ERROR = "error"


@dataclass(frozen=True)
class ScanRecord:
    at: datetime
    trigger: str
    ok: bool


@dataclass(frozen=True)
class SchedulerHealth:
    """How scheduled work is doing; informational (it never gates readiness: followers are healthy too)."""

    lease: LeaseState
    lease_error: str | None
    last_scan: ScanRecord | None
    next_scan: datetime | None
    lease_checked: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        last = self.last_scan
        return {"lease": str(self.lease), "lease_error": self.lease_error,
                "lease_checked": self.lease_checked.isoformat() if self.lease_checked else None,
                "last_scan": last.at.isoformat() if last else None,
                "last_scan_trigger": last.trigger if last else None,
                "last_scan_ok": last.ok if last else None,
                "next_scan": self.next_scan.isoformat() if self.next_scan else None}


@dataclass
class CertificateScheduler:
    reminders: ReminderService
    database_path: str
    timezone: ZoneInfo
    at: tuple[int, int]
    """Hour and minute of the daily scan, in ``timezone``."""
    elector: LeaderElector | None = None
    renew_every: float = 5.0
    scan_at_start: bool = True
    _scheduler: BackgroundScheduler | None = None
    _startup: threading.Thread | None = None
    _scan_lock: threading.Lock = field(default_factory=threading.Lock)
    scans: int = 0
    last_scan: ScanRecord | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))

    def start(self) -> CertificateScheduler:
        with _RUNNING_LOCK:
            _RUNNING[self.database_path] = self
        url = "sqlite:///" + self.database_path
        scheduler = self._scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=url, engine_options={"connect_args": {"timeout": 30}}),
                       "memory": MemoryJobStore()},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": int(MISFIRE_GRACE.total_seconds())},
            timezone=self.timezone)
        # Paused: the stored job is looked at (and kept) before anything runs; resume() then runs a missed scan.
        scheduler.start(paused=True)
        caught_up = self._keep_or_add_scan_job(scheduler)
        if self.elector is not None:
            scheduler.add_job(self.elector.tick, "interval", seconds=self.renew_every, jobstore="memory",
                              id="leader-election", next_run_time=datetime.now(timezone.utc),
                              name="leader election")
        scheduler.resume()
        if self.scan_at_start and not caught_up:  # a missed run about to be caught up is today's scan already
            # A thread of its own, not a one-off APScheduler job: those race with shutdown() in APScheduler 3
            # (JobLookupError in the scheduler thread when meshbot stops during the first scan).
            self._startup = threading.Thread(target=self.run_scan, args=("start-up",), name="scan-at-start",
                                             daemon=True)
            self._startup.start()
        return self

    def stop(self) -> None:
        if self._startup is not None:
            self._startup.join(timeout=30)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        with _RUNNING_LOCK:
            if _RUNNING.get(self.database_path) is self:
                del _RUNNING[self.database_path]
        if self.elector is not None:
            self.elector.release()

    def _keep_or_add_scan_job(self, scheduler: BackgroundScheduler) -> bool:
        """Keep the stored daily job (its next run time is what lets APScheduler see a missed run); replace
        its trigger only when the configured time or zone changed.  A job stored under the old path
        ``bot.scheduler:scheduled_scan`` keeps working through that shim module.  True when a missed run
        will now be caught up (APScheduler's misfire handling: late by less than the grace time)."""
        trigger = CronTrigger(hour=self.at[0], minute=self.at[1], timezone=self.timezone)
        stored = scheduler.get_job(SCAN_JOB, jobstore="default")
        if stored is None:
            scheduler.add_job(scheduled_scan, trigger, args=[self.database_path], id=SCAN_JOB,
                              jobstore="default", name="daily certificate scan")
            return False
        grace = int(MISFIRE_GRACE.total_seconds())
        if tuple(stored.args) != (self.database_path,) or not stored.coalesce or stored.misfire_grace_time != grace:
            scheduler.modify_job(SCAN_JOB, jobstore="default", args=[self.database_path], coalesce=True,
                                 misfire_grace_time=grace)
        if repr(stored.trigger) != repr(trigger):
            log.info("daily certificate scan moved to %02d:%02d %s", *self.at, self.timezone)
            scheduler.reschedule_job(SCAN_JOB, jobstore="default", trigger=trigger)
            return False
        missed = stored.next_run_time
        late = datetime.now(timezone.utc) - missed if missed else None
        if late is None or late < timedelta(0):
            return False
        if late > MISFIRE_GRACE:
            log.info("daily certificate scan of %s missed by %s, more than the %s grace: left to the next day",
                     missed.isoformat(), late, MISFIRE_GRACE)
            return False
        log.info("daily certificate scan of %s missed while meshbot was down: running it now", missed.isoformat())
        return True

    def next_scan(self) -> datetime | None:
        job = self._scheduler.get_job(SCAN_JOB) if self._scheduler else None
        return job.next_run_time if job else None

    def run_scan(self, trigger: str) -> bool:
        """Scan now unless another replica leads; False when skipped."""
        if self.elector is not None and not self.elector.tick():
            log.info("certificate scan (%s) skipped: another replica holds the lease", trigger)
            return False
        with self._scan_lock:
            try:
                self.reminders.scan()
            except Exception:
                log.exception("certificate scan (%s) failed; the next one retries", trigger)
                self.last_scan = ScanRecord(self.clock(), trigger, ok=False)
                return False
            self.scans += 1
            self.last_scan = ScanRecord(self.clock(), trigger, ok=True)
        return True

    # -- health ---------------------------------------------------------------------------------

    def health(self) -> SchedulerHealth:
        elector = self.elector
        if elector is None:
            lease, error = LeaseState.NOT_USED, None
        elif elector.last_error:
            lease, error = LeaseState.ERROR, elector.last_error
        else:
            lease, error = (LeaseState.HELD if elector.is_leader else LeaseState.FOLLOWER), None
        try:
            next_scan = self.next_scan()
        except Exception:  # the job store is SQLite: a locked or broken file must not break a probe
            next_scan = None
        return SchedulerHealth(lease, error, self.last_scan, next_scan,
                               lease_checked=elector.last_tick if elector else None)

    def describe(self) -> dict[str, Any]:
        """For ``Readiness.add_reporter``: ``{"scheduler": {...}}`` in ``/readyz``'s body."""
        return {"scheduler": self.health().to_dict()}


class SchedulerCollector(Collector):
    """Scheduled-work health as gauges, read at scrape time: ``registry.register(SchedulerCollector(s))``."""

    def __init__(self, scheduler: CertificateScheduler):
        self.scheduler = scheduler

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # names are known only at collect(); nothing to check against at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        health = self.scheduler.health()
        held = GaugeMetricFamily("meshbot_scheduler_lease_held",
                                 "1 when this replica holds the scheduler Lease (or leader election is off)")
        held.add_metric([], 1.0 if health.lease in (LeaseState.HELD, LeaseState.NOT_USED) else 0.0)
        yield held
        error = GaugeMetricFamily("meshbot_scheduler_lease_error",
                                  "1 when the latest attempt to read or renew the Lease failed (403, timeout...)")
        error.add_metric([], 1.0 if health.lease == LeaseState.ERROR else 0.0)
        yield error
        if health.last_scan is not None:
            last = GaugeMetricFamily("meshbot_scheduler_last_scan_timestamp_seconds",
                                     "When the latest certificate scan ran (Unix time)")
            last.add_metric([], health.last_scan.at.timestamp())
            yield last
            ok = GaugeMetricFamily("meshbot_scheduler_last_scan_success", "1 when the latest scan succeeded")
            ok.add_metric([], 1.0 if health.last_scan.ok else 0.0)
            yield ok
        if health.next_scan is not None:
            upcoming = GaugeMetricFamily("meshbot_scheduler_next_scan_timestamp_seconds",
                                         "When the next daily certificate scan is due (Unix time)")
            upcoming.add_metric([], health.next_scan.timestamp())
            yield upcoming
