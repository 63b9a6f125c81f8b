"""The outbox's entries, pure: what is queued, in which lane and order, how batches and retries are
timed, and what became of each entry (``Delivery``, handed to the outbox's ``DeliveryRecord``)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from commands.times import parse_rfc3339_or_none

MAX_BACKOFF_SECONDS = 60.0


class Op(StrEnum):
    POST = "post"
    UPDATE = "update"
    UPLOAD = "upload"


class State(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True)
class Entry:
    """One queued post, update or upload."""

    id: int
    incident_id: int | None
    """The incident (the conversation) it belongs to: its entries keep their order; None for other posts."""
    channel: str
    op: Op
    parent_id: int | None
    target_id: int | None
    raw_payload: str
    """The payload's JSON as stored; decoded on first use (``payload``): a pass over a storm's backlog plans every
    pending entry but sends only the few whose turn it is, and decoding them all on every pass made the outbox
    the serving process's largest holder of the GIL during an alert storm."""
    attempts: int
    next_attempt_at: datetime | None
    finished: bool = False
    """Its incident is over (resolved): its lane goes first and its alert updates do not wait for a batch."""
    severity_rank: int = 0
    """Its incident's urgency, 0 the most severe (critical): urgent lanes go by it before age."""

    @classmethod
    def from_row(cls, row: dict[str, Any], *, finished: bool = False, severity_rank: int = 0) -> Entry:
        return cls(id=row["id"], incident_id=row["incident_id"], channel=row["channel"], op=Op(row["op"]),
                   parent_id=row["parent_id"], target_id=row["target_id"], raw_payload=row["payload"],
                   attempts=row["attempts"], next_attempt_at=parse_rfc3339_or_none(row["next_attempt_at"]),
                   finished=finished, severity_rank=severity_rank)

    @functools.cached_property
    def payload(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.raw_payload)
        return decoded

    @property
    def lane(self) -> tuple[str, int]:
        """Entries of one lane keep their order; lanes are independent of each other."""
        if self.incident_id is not None:
            return ("incident", self.incident_id)
        return ("message", self.parent_id or self.target_id or self.id)

    @property
    def batchable(self) -> bool:
        return self.op == Op.POST and "batch" in self.payload

    @property
    def top_level(self) -> bool:
        return self.op == Op.POST and self.parent_id is None


def lanes_by_priority(entries: Sequence[Entry]) -> list[list[Entry]]:
    """Pending entries grouped in lanes; a new incident or a resolved one first, the most severe of those first
    (a critical alert arriving after 150 new warnings once waited 148 s for its first post), then oldest first."""
    lanes: dict[tuple[str, str, int], list[Entry]] = {}
    for entry in entries:
        lanes.setdefault((entry.channel, *entry.lane), []).append(entry)

    def rank(lane: list[Entry]) -> tuple[int, int, int]:
        urgent = lane[0].top_level or lane[0].finished
        return (0 if urgent else 1, lane[0].severity_rank if urgent else 0, lane[0].id)

    return sorted(lanes.values(), key=rank)


def batch_segment(lane: Sequence[Entry], start: int) -> tuple[list[Entry], list[Entry], int]:
    """From the alert update at ``start``: (the updates that go out as one reply, the message edits recorded
    among them, where the segment ends).  It ends at the next other post in the thread, which must follow
    the batch; edits of earlier messages (the top message's refresh) do not depend on it."""
    run: list[Entry] = []
    edits: list[Entry] = []
    end = start
    for entry in lane[start:]:
        if entry.op == Op.UPDATE:
            edits.append(entry)
        elif entry.batchable and entry.parent_id == lane[start].parent_id:
            run.append(entry)
        else:
            break
        end += 1
    return run, edits, end


def batch_summary(run: Sequence[Entry]) -> str:
    """'+9,000 alerts, 12 namespaces' (and how many resolved) for the reply that stands for ``run``."""
    items = [entry.payload["batch"] for entry in run]
    firing = sum(1 for item in items if item.get("status") != "resolved")
    resolved = len(items) - firing
    namespaces = {item.get("namespace") for item in items if item.get("namespace")}
    parts = [f"+{firing:,} alert{'s' * (firing != 1)}"] * bool(firing)
    parts += [f"{resolved:,} resolved"] * bool(resolved)
    parts += [f"{len(namespaces):,} namespace{'s' * (len(namespaces) != 1)}"] * bool(namespaces)
    return ", ".join(parts)


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """Exactly Slack's Retry-After when it gives one (a 429: "wait that many seconds", docs.slack.dev/apis/web-api/
    rate-limits; waiting longer only adds silence); else 1, 2, 4 … 60 s while Slack is down."""
    if retry_after is not None:
        return max(retry_after, 0.0)
    return min(2.0 ** min(max(attempts - 1, 0), 16), MAX_BACKOFF_SECONDS)  # capped: 2.0 ** 1025 overflows


def not_before(moment: datetime) -> datetime:
    """``moment`` rounded up to a whole second, as stored: a retry is never due before Retry-After."""
    return moment if moment.microsecond == 0 else moment.replace(microsecond=0) + timedelta(seconds=1)


@dataclass(frozen=True)
class Delivery:
    """What became of an entry: sent (with Slack's ts) or failed for good (with Slack's error code)."""

    entry: Entry
    ts: str | None = None
    """The message's ts in Slack (None for a file, and for a batch that went out as one)."""
    error: str | None = None
    batch: tuple[int, ...] = ()
    """A batch of alert updates sent as one reply: every entry it stood for, in order."""

    @property
    def thread_of(self) -> int | None:
        """The entry whose message this one replied to, in its thread."""
        return self.entry.parent_id

    @property
    def text(self) -> str:
        """The first line of what was (or would have been) posted."""
        return first_line(self.entry.payload)


def first_line(payload: dict[str, Any]) -> str:
    text = payload.get("text") or payload.get("title") or ""
    return text.splitlines()[0][:200] if text else ""
