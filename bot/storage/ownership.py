"""One meshbot process per SQLite file, and the file it started with: a lock file beside it and the file's identity.

SQLite's own locks serialise writers but let any number of processes run on one file: two ``meshbot serve``
on one volume both deliver the outbox (every post twice) and both resume executions.  So the first process
takes an exclusive ``flock`` on ``<db>.lock`` for as long as it lives (the kernel drops it when the process
dies, even by kill -9) and a second one is refused at start with one line naming the holder.  Threads and
tests of one process share the lock (a registry per path), so reopening a file in-process is never refused.

A database file deleted or replaced under a running process (a volume remounted, an operator's ``rm``) keeps
working through the old inode, and everything written from then on is gone at the next start: readiness
compares the path's device and inode with those recorded at start and fails when they differ.
"""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import dataclass
from pathlib import Path

_held: dict[str, int] = {}
"""Lock files this process holds (path -> open descriptor), kept until the process exits."""
_held_lock = threading.Lock()


class FileInUse(Exception):
    """Another process holds the database's lock file."""


def hold_exclusively(database_path: str) -> None:
    """Take ``<database_path>.lock`` for this process (again: a no-op); FileInUse when another process holds it."""
    lock_path = str(Path(database_path).resolve()) + ".lock"
    with _held_lock:
        if lock_path in _held:
            return
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FileInUse(f"{database_path} is in use by another meshbot process (pid {holder}, holding "
                            f"{lock_path}): run one process per SQLite file, or set MESHBOT_DATABASE_URL to "
                            "PostgreSQL for several replicas") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _held[lock_path] = fd


@dataclass(frozen=True)
class FileIdentity:
    """Which file a path named when meshbot started (device and inode)."""

    device: int
    inode: int

    @classmethod
    def of(cls, path: str) -> FileIdentity:
        info = os.stat(path)
        return cls(info.st_dev, info.st_ino)

    def problem(self, path: str) -> str | None:
        """Why ``path`` is no longer this file (None while it is)."""
        try:
            now = FileIdentity.of(path)
        except FileNotFoundError:
            return (f"the database file {path} was deleted while meshbot ran: what it writes now is lost at the "
                    "next start; restore the file or restart meshbot")
        if now != self:
            return (f"the database file {path} was replaced while meshbot ran (another file at that path now): "
                    "meshbot still writes to the old one; restart it")
        return None
