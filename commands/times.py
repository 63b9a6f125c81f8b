"""Time as meshbot writes, reads and says it: RFC 3339 stamps and human durations.

Every stored, logged or sent time goes through ``rfc3339``/``parse_rfc3339`` (UTC, ``Z``,
seconds), so the incident log, the approval store, Envoy's ``/certs`` and Kubernetes
annotations all read the same way.  The standard library only; every layer may import it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

__all__ = ["rfc3339", "rfc3339_or_none", "rfc3339_micro", "parse_rfc3339", "parse_rfc3339_or_none", "utcnow",
           "utc_minute", "human_duration", "short_duration", "column_duration"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime) -> str:
    """``2026-11-24T02:41:00Z``: UTC, seconds precision, as Envoy prints times and ``kubectl rollout restart``
    writes its annotation."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_or_none(moment: datetime | None) -> str | None:
    """``rfc3339`` for a column that may be empty."""
    return rfc3339(moment) if moment else None


def rfc3339_micro(moment: datetime) -> str:
    """Kubernetes MicroTime (a Lease's ``renewTime``): RFC 3339 with microseconds, UTC."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 time (``Z`` or an offset) as an aware UTC datetime; a time without a zone is UTC.

    ValueError when ``text`` is not one.
    """
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def parse_rfc3339_or_none(text: str | None) -> datetime | None:
    """``parse_rfc3339`` for a stored column or a field that may be empty."""
    return parse_rfc3339(text) if text else None


def utc_minute(moment: datetime) -> str:
    """``2026-12-01 09:00 UTC``: a time for people, to the minute."""
    return f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


def human_duration(delta: timedelta) -> str:
    """``3 days 4 hours``, ``5 days``, ``2 hours 5 minutes``, ``26 minutes``: the two largest units, for
    sentences ("expired 26 minutes ago").  The sign is ignored: the sentence says which way."""
    seconds = int(abs(delta).total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    units = [(days, "day"), (hours, "hour"), (seconds // 60, "minute"), (0, "")]
    for index, (count, unit) in enumerate(units[:-1]):
        if count:
            following, following_unit = units[index + 1]
            text = _plural(count, unit)
            return f"{text} {_plural(following, following_unit)}" if following else text
    return "less than a minute"


def short_duration(delta: timedelta) -> str:
    """``1h 12m``, ``2d 3h``, ``5m``, ``under a minute``: the two largest units, abbreviated, for Slack lines."""
    days, hours, minutes = _days_hours_minutes(delta)
    if not (days or hours or minutes):
        return "under a minute"
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    return f"{hours}h {minutes}m" if hours and minutes else f"{hours}h" if hours else f"{minutes}m"


def column_duration(delta: timedelta) -> str:
    """``2d 3h 4m``, ``1h 0m``, ``0m``: every unit down to minutes, for a column of incidents."""
    days, hours, minutes = _days_hours_minutes(delta)
    return " ".join([f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"])


def _days_hours_minutes(delta: timedelta) -> tuple[int, int, int]:
    minutes = int(max(delta.total_seconds(), 0) // 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return days, hours, minutes


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
