"""The database schema: every feature's migrations in one ordered list, and the database opened with it.

Versions are global (1, 2, 3…) and never renumbered: an existing database
remembers which ran in ``schema_version``.  A feature that needs a table adds
its migration with the next number to its module's ``MIGRATIONS`` and, if the
module is new, one line here.
"""

from __future__ import annotations

from pathlib import Path

from bot.approvals import store as approval_store
from bot.incidents import lifecycle as incident_lifecycle
from bot.incidents import notifications
from bot.incidents import store as incident_store
from bot.reminders import service as reminder_service
from bot.slack import outbox, replays
from bot.storage.backend import database_for
from bot.storage.database import Database, Migration, claim_leases, claims_table, hashed_group_index, migration
from bot.storage.intake import move_tables, open_intake

INTAKE_MIGRATIONS: tuple[Migration, ...] = (
    notifications.intake_notifications,  # 1: raw Alertmanager notifications
    replays.intake_deliveries,  # 2: Slack deliveries already handled
)
"""The request path's own file beside a SQLite database (``bot.storage.intake``), with its own version count."""
INTAKE_TABLES = ("notifications", "slack_deliveries")


@migration(15, "SQLite: the tables HTTP requests write (notifications, slack_deliveries) move to a file of their own")
def request_path_to_intake(db: object) -> None:
    move_tables(db, INTAKE_TABLES, INTAKE_MIGRATIONS)


MIGRATIONS: tuple[Migration, ...] = (
    *incident_store.MIGRATIONS,  # 1: incidents, incident alerts, hash-chained events, raw notifications
    *outbox.MIGRATIONS,  # 2: the Slack outbox
    *approval_store.MIGRATIONS,  # 3: approval requests and their votes
    *reminder_service.MIGRATIONS,  # 4: certificate reminders already posted
    incident_store.keyed_audit_chain,  # 5: keyed audit chain (older events stay an unkeyed prefix)
    approval_store.plan_binding,  # 6: approval plans bound to their request with the audit key
    claims_table,  # 7: claims (a channel's outbox held by one replica at a time, its next post time)
    approval_store.execution_lease,  # 8: which replica executes an approved request, and its heartbeat
    incident_store.audit_seal,  # 9: the audit seal (log identity, key check value, newest rotation), MAC'd
    approval_store.execution_fencing,  # 10: each execution claim's attempt (fencing token) and database-time lease
    replays.deliveries_table,  # 11: Slack deliveries already handled, shared by replicas and kept across restarts
    claim_leases,  # 12: claims are leases (holder, lease end on the database's clock), never locks held across work
    incident_lifecycle.lifecycle_tables,  # 13: incident severity set by people, lead, stage, mitigation; follow-ups
    hashed_group_index,  # 14: the one-open-incident-per-group index on md5(group_key) on PostgreSQL (long keys)
    request_path_to_intake,  # 15: beside a SQLite file, notifications and Slack deliveries go to meshbot.intake.db
)


def open_database(path: str | Path, *, url: str | None = None, password: str | None = None) -> Database:
    """The database at ``path`` (or PostgreSQL at ``url``), brought up to this meshbot's schema (a newer one is
    refused).  Replicas starting together on PostgreSQL migrate once: the first holds the migration lock."""
    database = database_for(path, MIGRATIONS, url=url, password=password)
    database.migrate()
    return database


def open_intake_for(database: Database) -> Database:
    """Where HTTP requests store what they must keep before answering: ``meshbot.intake.db`` beside a SQLite file
    (created and migrated here), else ``database`` itself."""
    return open_intake(database, INTAKE_MIGRATIONS)
