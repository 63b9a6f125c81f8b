"""The incident log's typed records: incidents, events, the stored diagnosis, and the times they carry.

Pure: no SQL.  ``bot.incidents.store`` reads rows into these and nothing else hands out raw rows of the
incident tables (the alerts of an incident stay plain rows: the top message renders them as they are).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, overload


class IncidentStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class EventKind(StrEnum):
    INCIDENT_OPENED = "incident_opened"
    ALERT_RECEIVED = "alert_received"
    ALERT_RESOLVED = "alert_resolved"
    DIAGNOSTICS_RUN = "diagnostics_run"
    MESSAGE_POSTED = "message_posted"
    MESSAGE_FAILED = "message_failed"
    NOTE = "note"
    STATE_CHANGED = "state_changed"
    REMINDER = "reminder"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_CLICK = "approval_click"
    APPROVAL_STATE = "approval_state"
    ACTION_EXECUTED = "action_executed"
    ACTION_VERIFIED = "action_verified"
    ACTION_FAILED = "action_failed"
    EXECUTION_SUPERSEDED = "execution_superseded"
    """An executor found its claim taken over (it was paused past its lease) and stopped without writing more."""
    COMMAND_REFUSED = "command_refused"
    """A ``/mesh`` command refused for want of a role."""
    APPROVAL_GRANTED = "approval_granted"
    """The quorum was reached: the single-use grant to execute exactly this plan binding."""
    SEVERITY_CHANGED = "severity_changed"
    LEAD_SET = "lead_set"
    STAGE_CHANGED = "stage_changed"
    """A status update: the response's stage (investigating, fixing, mitigated, monitoring) with a short note."""
    FOLLOW_UP = "follow_up"
    AUDIT_KEY_ROTATED = "audit_key_rotated"
    AUDIT_ALARM = "audit_alarm"
    """Evidence of tampering meshbot found while running (an anchor that is no ancestor, an execution without
    authority): ``verify`` reports every one."""


STATE_CHANGE_KINDS = (str(EventKind.INCIDENT_OPENED), str(EventKind.STATE_CHANGED))
"""Events after which the chain's head is anchored at once (not only every ``ANCHOR_EVERY``)."""


@dataclass(frozen=True)
class Incident:
    id: int
    group_key: str
    title: str
    severity: str
    status: IncidentStatus
    channel: str | None
    top_message: int | None
    opened_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    labels: Mapping[str, str]
    namespaces: tuple[str, ...]
    services: tuple[str, ...]
    external_url: str
    playbook: str | None
    diagnosed: bool
    source: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Incident:
        return cls(id=row["id"], group_key=row["group_key"], title=row["title"], severity=row["severity"],
                   status=IncidentStatus(row["status"]), channel=row["channel"], top_message=row["top_message"],
                   opened_at=stored_time(row["opened_at"]), resolved_at=parse_time(row["resolved_at"]),
                   resolved_by=row["resolved_by"], labels=json.loads(row["labels"]),
                   namespaces=tuple(json.loads(row["namespaces"])), services=tuple(json.loads(row["services"])),
                   external_url=row["external_url"], playbook=row["playbook"], diagnosed=bool(row["diagnosed"]),
                   source=row["source"])

    def duration(self, now: datetime) -> str:
        end = self.resolved_at or now
        minutes = int((end - self.opened_at).total_seconds() // 60)
        hours, minutes = divmod(minutes, 60)
        days, hours = divmod(hours, 24)
        parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"]
        return " ".join(parts)

    def thread_channel(self) -> str:
        """The channel of the incident's thread (IncidentFlow opens incidents only where a channel is set)."""
        if not self.channel:
            raise ValueError(f"incident #{self.id} has no Slack channel")
        return self.channel

    def thread_top(self) -> int:
        """The outbox entry of the thread's top message, to reply under."""
        if self.top_message is None:
            raise ValueError(f"incident #{self.id} has no Slack thread")
        return self.top_message


@dataclass(frozen=True)
class Event:
    id: int
    incident_id: int | None
    at: datetime
    actor: str
    kind: str
    data: Mapping[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Event:
        return cls(id=row["id"], incident_id=row["incident_id"], at=stored_time(row["at"]), actor=row["actor"],
                   kind=row["kind"], data=json.loads(row["data"]), prev_hash=row["prev_hash"], hash=row["hash"])

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "incident_id": self.incident_id, "at": iso(self.at), "actor": self.actor,
                "kind": self.kind, "data": dict(self.data), "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class DiagnosisRecord:
    """What one diagnosis of an incident found, as stored with its ``diagnostics_run`` event.

    The top message's headline, the join of two incidents with the same cause, the playbook buttons and the
    export all read it back; the field names are the event's JSON keys, so logs written before this type
    read the same."""

    playbook: str
    steps: tuple[Mapping[str, Any], ...] = ()
    """Each check the playbook ran: check, namespace, pod, seconds, error."""
    errors: tuple[str, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    findings: tuple[Mapping[str, Any], ...] = ()
    """The most severe findings (at most ``MAX_FINDINGS_IN_LOG``), as ``Finding.to_dict``."""
    findings_total: int = 0
    elsewhere: int = 0
    """Findings outside the incident's namespaces."""
    triage: tuple[Mapping[str, Any], ...] = ()
    """Probable causes, most likely first, as ``Cause.to_dict``."""
    suggested: tuple[Mapping[str, Any], ...] = ()
    """The playbook's suggested remediations: title, action, codes."""
    joined: int | None = None
    """The open incident this one joined (same probable cause), if any."""
    joined_cause: str = ""
    timeline: Mapping[str, Any] | None = None
    """The onset, worst failing edges and last change before the onset (``bot.timeline.summary.TimelineSummary``
    data), when the diagnosis read a timeline."""

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> DiagnosisRecord:
        joined = data.get("joined")
        return cls(playbook=str(data.get("playbook") or ""), steps=tuple(data.get("steps") or ()),
                   errors=tuple(data.get("errors") or ()), counts=dict(data.get("counts") or {}),
                   findings=tuple(data.get("findings") or ()), findings_total=int(data.get("findings_total") or 0),
                   elsewhere=int(data.get("elsewhere") or 0), triage=tuple(data.get("triage") or ()),
                   suggested=tuple(data.get("suggested") or ()), joined=int(joined) if joined else None,
                   joined_cause=str(data.get("joined_cause") or ""), timeline=data.get("timeline") or None)

    def to_data(self) -> dict[str, Any]:
        """The event's data; ``joined`` and ``joined_cause`` only when the incident joined another."""
        data: dict[str, Any] = {
            "playbook": self.playbook, "steps": [dict(s) for s in self.steps], "errors": list(self.errors),
            "counts": dict(self.counts), "findings": [dict(f) for f in self.findings],
            "findings_total": self.findings_total, "elsewhere": self.elsewhere,
            "triage": [dict(c) for c in self.triage], "suggested": [dict(s) for s in self.suggested]}
        if self.joined is not None:
            data.update(joined=self.joined, joined_cause=self.joined_cause)
        if self.timeline:
            data["timeline"] = dict(self.timeline)
        return data

    @property
    def cause_keys(self) -> frozenset[str]:
        return frozenset(str(cause["key"]) for cause in self.triage)

    def suggestion(self, index: int) -> Mapping[str, Any] | None:
        """The suggested remediation a playbook button names, if it still names one with an action."""
        if not 0 <= index < len(self.suggested) or not self.suggested[index].get("action"):
            return None
        return self.suggested[index]


@overload
def iso(moment: datetime) -> str: ...
@overload
def iso(moment: None) -> None: ...
@overload
def iso(moment: datetime | None) -> str | None: ...
def iso(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, to the second: how the incident tables store times."""
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z") if moment else None


def parse_time(text: str | None) -> datetime | None:
    """A stored time back, aware (UTC when it carries no zone); None for no time."""
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def stored_time(text: str) -> datetime:
    """A time from a NOT NULL column (or an anchor): never empty, so never None."""
    moment = parse_time(text)
    if moment is None:
        raise ValueError("a stored time is empty")
    return moment


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
