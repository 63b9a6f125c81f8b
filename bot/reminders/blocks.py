"""Certificate-expiry reminders as Slack messages and as plain text.  Pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.slack.blocks import Message, escape, message_of, section
from commands.certificates.reminders import Expiry, Reminder
from commands.thresholds import DEFAULT_THRESHOLDS

MAX_LISTED = 25


def _when(expiry: Expiry, tz: ZoneInfo) -> str:
    local = expiry.not_after.astimezone(tz)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"


def _left(expiry: Expiry) -> str:
    if expiry.expired:
        return f"EXPIRED {-expiry.days_left} day(s) ago" if expiry.days_left < 0 else "EXPIRED today"
    if expiry.days_left == 0:
        return "expires TODAY"
    return f"{expiry.days_left} day(s) left"


def _icon(expiry: Expiry) -> str:
    if expiry.expired:
        return ":rotating_light:"
    if expiry.days_left <= DEFAULT_THRESHOLDS.cert_error_days:
        return ":red_circle:"
    if expiry.days_left <= DEFAULT_THRESHOLDS.cert_warning_days:
        return ":large_orange_circle:"
    return ":large_blue_circle:"


def reminder_lines(reminder: Reminder, tz: ZoneInfo) -> list[str]:
    """The reminder's facts, one per line (shared by Slack and ``meshbot remind``)."""
    expiry = reminder.expiry
    why = f"{reminder.threshold}-day reminder" if reminder.threshold is not None else "daily reminder"
    lines = [f"{expiry.what} \u2014 {_left(expiry)} ({why})",
             f"Where: {expiry.origin}",
             f"Expires: {_when(expiry, tz)}"]
    if expiry.subject:
        lines.append(f"Subject: {expiry.subject}")
    if expiry.sans:
        lines.append("SANs: " + ", ".join(expiry.sans[:10]))
    lines.append(f"Serial: {expiry.serial}")
    depends = list(dict.fromkeys([*expiry.dependents, *(f"namespace {n}" for n in expiry.namespaces)]))
    if depends:
        lines.append("Depends on it: " + ", ".join(depends[:15]) + (" \u2026" if len(depends) > 15 else ""))
    lines.append(f"Renew: {expiry.renewal}")
    if expiry.renewal_command:
        lines.append(f"  $ {expiry.renewal_command}")
    return lines


def reminder_message(reminder: Reminder, tz: ZoneInfo) -> Message:
    expiry = reminder.expiry
    lines = reminder_lines(reminder, tz)
    head = f"{_icon(expiry)} *Certificate reminder: {escape(lines[0])}*"
    body = "\n".join(f"*{escape(line.split(': ', 1)[0])}:* {escape(line.split(': ', 1)[1])}"
                     if ": " in line and not line.startswith("  ") else f"`{escape(line.strip())}`"
                     for line in lines[1:])
    return message_of(f"Certificate reminder: {lines[0]}", [section(head), section(body)])


def upcoming_text(expiries: Sequence[Expiry], tz: ZoneInfo, now: datetime) -> str:
    """``/mesh reminders``: what expires next, soonest first."""
    if not expiries:
        return "meshbot found no mesh or gateway certificates to watch."
    lines = [f"*Certificates by expiry* (as of {now.astimezone(tz):%Y-%m-%d %H:%M} {tz.key}):"]
    for expiry in expiries[:MAX_LISTED]:
        lines.append(f"{_icon(expiry)} {escape(expiry.what)} \u2014 {_left(expiry)}, {_when(expiry, tz)} "
                     f"\u00b7 {escape(expiry.origin)}")
    if len(expiries) > MAX_LISTED:
        lines.append(f"\u2026 and {len(expiries) - MAX_LISTED} more")
    return "\n".join(lines)
