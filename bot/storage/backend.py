"""Which database meshbot runs on: SQLite at MESHBOT_DB (the embedded default) or MESHBOT_DATABASE_URL's PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bot.storage.database import Database, Migration
from bot.storage.postgres import PostgresDatabase


def database_for(path: str | Path, migrations: Sequence[Migration], *, url: str | None = None,
                 password: str | None = None) -> Database:
    """PostgreSQL when ``url`` is set, else SQLite at ``path``; not yet migrated."""
    if url:
        return PostgresDatabase(url, migrations, password=password)
    return Database(path, migrations)
