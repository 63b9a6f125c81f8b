"""Upgrading keeps the schedule: jobs stored before the feature packages name ``bot.scheduler:scheduled_scan``."""

from __future__ import annotations

from datetime import datetime, timezone

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.reminders.scheduler import scheduled_scan


def test_a_job_stored_under_the_old_module_path_still_loads_and_runs_the_scan(tmp_path):
    url = f"sqlite:///{tmp_path / 'meshbot.db'}"
    writer = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(url=url)}, timezone=timezone.utc)
    writer.add_job("bot.scheduler:scheduled_scan", CronTrigger(hour=9, minute=0, timezone=timezone.utc),
                   args=[str(tmp_path / "meshbot.db")], id="certificate-scan")
    writer.start(paused=True)
    writer.shutdown(wait=False)

    [job] = SQLAlchemyJobStore(url=url).get_all_jobs()
    assert job.func is scheduled_scan
    assert job.func_ref == "bot.scheduler:scheduled_scan"
    assert job.next_run_time > datetime(2000, 1, 1, tzinfo=timezone.utc)
