"""Kept for upgrades: databases written before the feature packages store the daily scan job as
``bot.scheduler:scheduled_scan`` (APScheduler pickles the target's import path), so that path must still
resolve to the job's function."""

from bot.reminders.scheduler import scheduled_scan

__all__ = ["scheduled_scan"]
