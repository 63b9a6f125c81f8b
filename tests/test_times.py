"""commands.times: the one place meshbot writes, reads and says times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from commands.times import (
    column_duration,
    human_duration,
    parse_rfc3339,
    parse_rfc3339_or_none,
    rfc3339,
    rfc3339_micro,
    rfc3339_or_none,
    short_duration,
    utc_minute,
)

MOMENT = datetime(2026, 11, 24, 2, 41, tzinfo=timezone.utc)


def test_times_round_trip_as_utc_z() -> None:
    assert rfc3339(parse_rfc3339("2026-11-24T02:41:00Z")) == "2026-11-24T02:41:00Z"


def test_an_offset_is_converted_to_utc() -> None:
    assert parse_rfc3339("2026-11-24T04:41:00+02:00") == MOMENT
    assert parse_rfc3339("2026-11-24T04:41:00+02:00").tzinfo == timezone.utc


def test_a_time_without_zone_is_utc() -> None:
    assert parse_rfc3339("2026-11-24T02:41:00") == MOMENT


def test_python_isoformat_and_microseconds_are_read_too() -> None:
    """Older rows were stored with ``datetime.isoformat()`` (``+00:00``, microseconds)."""
    assert parse_rfc3339("2026-11-24T02:41:00.250000+00:00") == MOMENT + timedelta(milliseconds=250)


def test_not_a_time_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_rfc3339("yesterday")


def test_empty_columns_stay_empty() -> None:
    assert parse_rfc3339_or_none(None) is None
    assert parse_rfc3339_or_none("") is None
    assert rfc3339_or_none(None) is None
    assert rfc3339_or_none(MOMENT) == "2026-11-24T02:41:00Z"


def test_kubernetes_micro_time_keeps_microseconds() -> None:
    assert rfc3339_micro(MOMENT + timedelta(microseconds=7)) == "2026-11-24T02:41:00.000007Z"
    assert parse_rfc3339("2026-11-24T02:41:00.000007Z") == MOMENT + timedelta(microseconds=7)


def test_utc_minute_is_for_people() -> None:
    assert utc_minute(MOMENT.astimezone(timezone(timedelta(hours=2)))) == "2026-11-24 02:41 UTC"


@pytest.mark.parametrize("delta, text", [
    (timedelta(days=3, hours=4, minutes=5), "3 days 4 hours"),
    (timedelta(days=5), "5 days"),
    (timedelta(days=1, hours=1), "1 day 1 hour"),
    (timedelta(hours=2, minutes=5), "2 hours 5 minutes"),
    (timedelta(minutes=26), "26 minutes"),
    (timedelta(seconds=20), "less than a minute"),
    (-timedelta(days=2, hours=3), "2 days 3 hours"),
])
def test_human_durations_name_the_two_largest_units(delta: timedelta, text: str) -> None:
    assert human_duration(delta) == text


@pytest.mark.parametrize("delta, text", [
    (timedelta(seconds=59), "under a minute"),
    (timedelta(minutes=5), "5m"),
    (timedelta(hours=1, minutes=12), "1h 12m"),
    (timedelta(hours=2), "2h"),
    (timedelta(days=2, hours=3, minutes=9), "2d 3h"),
    (timedelta(days=2, minutes=9), "2d"),
    (-timedelta(minutes=5), "under a minute"),
])
def test_short_durations_abbreviate_the_two_largest_units(delta: timedelta, text: str) -> None:
    assert short_duration(delta) == text


@pytest.mark.parametrize("delta, text", [
    (timedelta(seconds=30), "0m"),
    (timedelta(hours=1), "1h 0m"),
    (timedelta(days=2, hours=3, minutes=4), "2d 3h 4m"),
    (timedelta(days=2, minutes=4), "2d 4m"),
])
def test_column_durations_always_end_in_minutes(delta: timedelta, text: str) -> None:
    assert column_duration(delta) == text
