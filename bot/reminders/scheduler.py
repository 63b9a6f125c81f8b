"""The scheduler inside ``meshbot serve``: the daily certificate scan, one at start-up, and leader election.

APScheduler keeps the daily job in the SQLite database (its SQLAlchemy job
store, table ``apscheduler_jobs``), so a scan missed while meshbot was down
runs once when it is back (coalesced), never twice; what each scan posted is
in the reminder ledger (``bot.reminders.service``).  With leader election on, every
replica runs the same schedule but only the holder of the Lease scans.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

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

    def start(self) -> CertificateScheduler:
        with _RUNNING_LOCK:
            _RUNNING[self.database_path] = self
        url = "sqlite:///" + self.database_path
        self._scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=url, engine_options={"connect_args": {"timeout": 30}}),
                       "memory": MemoryJobStore()},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": int(MISFIRE_GRACE.total_seconds())},
            timezone=self.timezone)
        self._scheduler.add_job(scheduled_scan, CronTrigger(hour=self.at[0], minute=self.at[1],
                                                            timezone=self.timezone),
                                args=[self.database_path], id=SCAN_JOB, replace_existing=True,
                                name="daily certificate scan")
        now = datetime.now(timezone.utc)
        if self.elector is not None:
            self._scheduler.add_job(self.elector.tick, "interval", seconds=self.renew_every, jobstore="memory",
                                    id="leader-election", next_run_time=now, name="leader election")
        self._scheduler.start()
        if self.scan_at_start:
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
                return False
            self.scans += 1
        return True
