"""Block Kit primitives (via slack_sdk's models) and the slash commands' findings messages. Pure functions.

Each feature keeps its own messages beside it (bot/incidents/blocks.py, bot/approvals/blocks.py,
bot/reminders/blocks.py), built from these.  Slack rejects a message with more than 50 blocks, a
section text over 3000 characters or a header over 150, so every builder clips; a long report shows
the most severe findings and says how many more are in the attached file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from commands.coverage import Coverage
from commands.findings import Finding, Level, count_by_level
from commands.report import remediation_label, split_summary
from commands.times import short_duration, utc_minute

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_FALLBACK_TEXT = 3000
MAX_CONTEXT_ELEMENTS = 10
FINDINGS_PER_MESSAGE = 20

LEVEL_EMOJI = {Level.ERROR: ":red_circle:", Level.WARNING: ":large_orange_circle:", Level.INFO: ":large_blue_circle:"}


@dataclass(frozen=True)
class Message:
    """What chat.postMessage/chat.update take: a plain-text fallback and the blocks."""

    text: str
    blocks: list[dict] = field(default_factory=list)


def escape(text: str) -> str:
    """Slack mrkdwn control characters; user-controlled text must not ping channels or fake links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def message_of(text: str, blocks: Sequence[Block]) -> Message:
    rendered = [b.to_dict() for b in blocks][:MAX_BLOCKS]
    return Message(text=clip(defuse_special_mentions(text), MAX_FALLBACK_TEXT), blocks=rendered)


def plain(text: str) -> str:
    """Text from outside (alert labels, titles, notes) for a message's fallback ``text``: Slack parses that
    field like mrkdwn, so raw ``<@U…>``, ``<#C…>`` or ``<https://…|label>`` would ping, link or mislead there
    exactly as in a block.  https://docs.slack.dev/messaging/formatting-message-text/#escaping"""
    return escape(text)


def defuse_special_mentions(text: str) -> str:
    """``<!channel>``, ``<!here>``, ``<!subteam^…>`` notify people even from the fallback text, which
    carries alert titles and notes verbatim; meshbot itself never sends them."""
    return text.replace("<!", "&lt;!")


def section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=clip(text, MAX_SECTION_TEXT)))


def header(text: str) -> HeaderBlock:
    return HeaderBlock(text=clip(text, MAX_HEADER_TEXT))


def context(*texts: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=clip(t, 2000)) for t in texts[:MAX_CONTEXT_ELEMENTS]])


def scope(namespace: str | None) -> str:
    return f"`{namespace}`" if namespace else "all namespaces"


def counts_text(findings: Sequence[Finding]) -> str:
    """``:red_circle: 2 errors · :large_orange_circle: 1 warning``; a level with nothing is left out, so a red
    dot always means there is something to fix."""
    counts = count_by_level(findings)
    shown = [f"{LEVEL_EMOJI[level]} {plural(counts[level], _LEVEL_WORD[level])}" for level in Level if counts[level]]
    # No ✔ here: an empty list says nothing about what was scanned (``verdict_text`` does).
    return " \u00b7 ".join(shown) or "no findings"


_LEVEL_WORD = {Level.ERROR: "error", Level.WARNING: "warning", Level.INFO: "info"}


def plural(count: int, word: str) -> str:
    """``1 warning``, ``2 warnings``, ``1 sidecar``; "info" is a mass noun and stays as it is."""
    if count == 1 or word == "info":
        return f"{count} {word}"
    return f"{count} {word}es" if word.endswith(("s", "sh", "ch", "x")) else f"{count} {word}s"


# -- slash-command diagnostics -----------------------------------------------------------

def running(check: str, namespace: str | None, user: str) -> Message:
    text = f"Running {check} for {namespace or 'all namespaces'}, requested by <@{user}>"
    return message_of(text, [section(f":hourglass_flowing_sand: Running *{check}* for {scope(namespace)}, "
                                   f"requested by <@{user}>\u2026")])


def verdict_text(seen: Coverage) -> str:
    """The all-clear (✔ only when something was scanned and everything was read), or what was not checked."""
    icon = ":white_check_mark:" if seen.all_clear else ":warning:"
    return f"{icon} {escape(seen.verdict())}"


def outcome(check: str, namespace: str | None, user: str, findings: Sequence[Finding], seconds: float,
            seen: Coverage | None = None) -> Message:
    counts = count_by_level(findings)
    quiet = ":white_check_mark:" if seen is None or seen.all_clear else ":warning:"
    icon = ":red_circle:" if counts[Level.ERROR] else ":large_orange_circle:" if counts[Level.WARNING] else quiet
    summary = counts_text(findings) if seen is None or seen.problems else escape(seen.verdict())
    text = f"{check} for {namespace or 'all namespaces'}: {plain_counts(findings)} (requested by <@{user}>)"
    return message_of(text, [
        section(f"{icon} *{check}* for {scope(namespace)}, requested by <@{user}>: {summary}"),
        context(f"Finished in {seconds:.1f}s \u00b7 details in the thread"),
    ])


def failed(check: str, namespace: str | None, user: str, reason: str) -> Message:
    text = f"{check} for {namespace or 'all namespaces'} failed: {reason}"
    return message_of(text, [section(f":x: *{check}* for {scope(namespace)}, requested by <@{user}>, "
                                   f"failed: {escape(reason)}")])


def plain_counts(findings: Sequence[Finding]) -> str:
    counts = count_by_level(findings)
    return ", ".join(plural(counts[level], _LEVEL_WORD[level]) for level in Level if counts[level]) or "no findings"


def finding_text(finding: Finding) -> str:
    """One finding as mrkdwn: level, code, origin, message, and the fix."""
    lines = [f"{LEVEL_EMOJI[finding.level]} *{finding.level}* `{finding.code}` \u00b7 {escape(finding.origin)}",
             escape(finding.message)]
    remediation = finding.remediation
    if remediation:
        # "Fix:" only for a command that fixes; advice and commands that only look are a next step (issue 27).
        label = escape(remediation_label(finding))
        if remediation.command:
            lines.append(f"*{label}:* {escape(remediation.summary)}\n`{escape(remediation.command)}`")
        else:
            lines.append(f"*{label}:* {escape(remediation.summary)}")
    return "\n".join(lines)


def findings_report(title: str, findings: Sequence[Finding], *, limit: int = FINDINGS_PER_MESSAGE,
                    extra_blocks: Sequence[Block] = (), seen: Coverage | None = None) -> tuple[Message, int]:
    """The thread message with the findings: (message, how many findings did not fit).

    ``seen`` (what the diagnosis scanned) replaces a bare "no problems" with what was checked, and says what
    was not checked even when there are findings."""
    summaries, ordered = split_summary(findings)
    shown, hidden = ordered[:limit], max(len(ordered) - limit, 0)
    blocks: list[Block] = [header(title), section(counts_text(findings))]
    if summaries:
        blocks.append(section("\n".join(f"_{escape(f.check)}_: {escape(f.message)}" for f in summaries)))
    if shown:
        blocks.append(DividerBlock())
        blocks.extend(section(finding_text(f)) for f in shown)
    if seen is not None and (not seen.problems or seen.not_checked):
        blocks.append(section(verdict_text(seen)))
    elif not shown and not summaries:
        blocks.append(section("No findings (what was scanned is not known, so this is no all-clear)."))
    blocks.extend(extra_blocks)
    if hidden:
        blocks.append(context(f"\u2026and {hidden} more finding{'s' * (hidden != 1)}: the full report is "
                              "attached below as a file."))
    top = "; ".join(f"{f.level} {f.code} {f.origin}" for f in shown[:3])
    text = f"{title}: {plain_counts(findings)}" + (f". Most severe: {top}" if top else "")
    return message_of(text, blocks[:MAX_BLOCKS]), hidden


def cluster_unavailable(reason: str) -> Message:
    text = f"Could not diagnose: {reason}"
    return message_of(text, [section(f":warning: *Could not diagnose.* {escape(reason)}")])


def buttons(*elements: ButtonElement, block_id: str | None = None) -> ActionsBlock:
    return ActionsBlock(elements=list(elements)[:25], block_id=block_id)


def button(text: str, action_id: str, value: str, *, style: str | None = None) -> ButtonElement:
    """One button (Slack clips its label at 75 characters)."""
    return ButtonElement(text=clip(text, 75), action_id=action_id, value=value, style=style)


def link(url: str, label: str) -> str | None:
    """A Slack link to an http(s) URL, or None when the URL is not one (never pass through other schemes)."""
    if not url.startswith(("http://", "https://")) or any(c in url for c in " \n<>"):
        return None
    return f"<{url.replace('|', '%7C')}|{escape(label)}>"


def slack_time(moment: datetime) -> str:
    """A time Slack shows in each reader's own zone, with the date; the fallback is UTC."""
    moment = moment.astimezone(timezone.utc)
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{moment:%Y-%m-%d %H:%M} UTC>"


def utc_time(moment: datetime) -> str:
    return utc_minute(moment)


def human_duration(seconds: float) -> str:
    """``1h 12m``, ``2d 3h``, ``under a minute``."""
    return short_duration(timedelta(seconds=seconds))
