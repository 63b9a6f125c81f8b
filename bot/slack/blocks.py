"""Findings, incidents and approvals as Slack messages (Block Kit via slack_sdk's models). Pure functions.

Slack rejects a message with more than 50 blocks, a section text over 3000
characters or a header over 150, so every builder clips; a long report shows
the most severe findings and says how many more are in the attached file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from slack_sdk.models.blocks import (
    ActionsBlock, Block, ButtonElement, ContextBlock, DividerBlock, HeaderBlock, MarkdownTextObject, SectionBlock,
)

from commands.findings import Finding, Level, count_by_level
from commands.report import split_summary

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
    counts = count_by_level(findings)
    return " \u00b7 ".join(f"{LEVEL_EMOJI[level]} {counts[level]} {_plural(level, counts[level])}"
                           for level in Level)


def _plural(level: Level, n: int) -> str:
    word = {Level.ERROR: "error", Level.WARNING: "warning", Level.INFO: "info"}[level]
    return word if n == 1 or level == Level.INFO else word + "s"


# -- slash-command diagnostics -----------------------------------------------------------

def running(check: str, namespace: str | None, user: str) -> Message:
    text = f"Running {check} for {namespace or 'all namespaces'}, requested by <@{user}>"
    return message_of(text, [section(f":hourglass_flowing_sand: Running *{check}* for {scope(namespace)}, "
                                   f"requested by <@{user}>\u2026")])


def outcome(check: str, namespace: str | None, user: str, findings: Sequence[Finding], seconds: float) -> Message:
    counts = count_by_level(findings)
    icon = (":red_circle:" if counts[Level.ERROR] else ":large_orange_circle:" if counts[Level.WARNING]
            else ":white_check_mark:")
    summary = counts_text(findings)
    text = f"{check} for {namespace or 'all namespaces'}: {_plain_counts(findings)} (requested by <@{user}>)"
    return message_of(text, [
        section(f"{icon} *{check}* for {scope(namespace)}, requested by <@{user}>: {summary}"),
        context(f"Finished in {seconds:.1f}s \u00b7 details in the thread"),
    ])


def failed(check: str, namespace: str | None, user: str, reason: str) -> Message:
    text = f"{check} for {namespace or 'all namespaces'} failed: {reason}"
    return message_of(text, [section(f":x: *{check}* for {scope(namespace)}, requested by <@{user}>, "
                                   f"failed: {escape(reason)}")])


def _plain_counts(findings: Sequence[Finding]) -> str:
    counts = count_by_level(findings)
    return (f"{counts[Level.ERROR]} errors, {counts[Level.WARNING]} warnings, {counts[Level.INFO]} info")


def finding_text(finding: Finding) -> str:
    """One finding as mrkdwn: level, code, origin, message, and the fix."""
    lines = [f"{LEVEL_EMOJI[finding.level]} *{finding.level}* `{finding.code}` \u00b7 {escape(finding.origin)}",
             escape(finding.message)]
    remediation = finding.remediation
    if remediation:
        if remediation.command:
            lines.append(f"*Fix:* {escape(remediation.summary)}\n`{escape(remediation.command)}`")
        else:
            lines.append(f"*Fix:* {escape(remediation.summary)}")
    return "\n".join(lines)


def findings_report(title: str, findings: Sequence[Finding], *, limit: int = FINDINGS_PER_MESSAGE,
                    extra_blocks: Sequence[Block] = ()) -> tuple[Message, int]:
    """The thread message with the findings: (message, how many findings did not fit)."""
    summaries, ordered = split_summary(findings)
    shown, hidden = ordered[:limit], max(len(ordered) - limit, 0)
    blocks: list[Block] = [header(title), section(counts_text(findings))]
    if summaries:
        blocks.append(section("\n".join(f"_{escape(f.check)}_: {escape(f.message)}" for f in summaries)))
    if shown:
        blocks.append(DividerBlock())
        blocks.extend(section(finding_text(f)) for f in shown)
    elif not summaries:
        blocks.append(section(":white_check_mark: No problems found."))
    blocks.extend(extra_blocks)
    if hidden:
        blocks.append(context(f"\u2026and {hidden} more finding{'s' * (hidden != 1)}: the full report is "
                              "attached below as a file."))
    top = "; ".join(f"{f.level} {f.code} {f.origin}" for f in shown[:3])
    text = f"{title}: {_plain_counts(findings)}" + (f". Most severe: {top}" if top else "")
    return message_of(text, blocks[:MAX_BLOCKS]), hidden


def cluster_unavailable(reason: str) -> Message:
    text = f"Could not diagnose: {reason}"
    return message_of(text, [section(f":warning: *Could not diagnose.* {escape(reason)}")])


def notice(text: str) -> Message:
    """A one-section message (ephemeral answers, refusals)."""
    return message_of(text, [section(escape(text))])


def buttons(*elements: ButtonElement, block_id: str | None = None) -> ActionsBlock:
    return ActionsBlock(elements=list(elements)[:25], block_id=block_id)


# -- incidents ------------------------------------------------------------------------------

SEVERITY_EMOJI = {"critical": ":rotating_light:", "error": ":red_circle:", "warning": ":warning:"}


def link(url: str, label: str) -> str | None:
    """A Slack link to an http(s) URL, or None when the URL is not one (never pass through other schemes)."""
    if not url.startswith(("http://", "https://")) or any(c in url for c in " \n<>"):
        return None
    return f"<{url.replace('|', '%7C')}|{escape(label)}>"


def incident_message(incident, alerts: Sequence[dict], now) -> Message:
    """The incident's top-level message: what, how bad, where, since when, and links."""
    firing = [a for a in alerts if a["status"] == "firing"]
    resolved = incident.status == "resolved"
    icon = ":white_check_mark:" if resolved else SEVERITY_EMOJI.get(incident.severity, ":bell:")
    if resolved:
        state = f"Resolved after {incident.duration(now)}"
    elif alerts:
        state = (f"Firing since {incident.opened_at:%H:%M} UTC ({incident.duration(now)}), "
                 f"{len(firing)} alert{'s' * (len(firing) != 1)}")
    else:
        state = f"Opened by {incident.source} at {incident.opened_at:%H:%M} UTC ({incident.duration(now)})"
    lines = [f"{icon} *{escape(incident.severity.upper())} \u00b7 {escape(incident.title)}*",
             f"*Status:* {state} \u00b7 Incident #{incident.id}"]
    if incident.namespaces:
        lines.append("*Namespaces:* " + ", ".join(f"`{escape(n)}`" for n in incident.namespaces))
    if incident.services:
        lines.append("*Services:* " + ", ".join(f"`{escape(s)}`" for s in incident.services))
    links = [link(a["generator_url"], "Prometheus") for a in alerts[:1]] + [link(incident.external_url,
                                                                                "Alertmanager")]
    links = [x for x in links if x]
    footer = " \u00b7 ".join(links + ([f"playbook `{escape(incident.playbook)}`"] if incident.playbook else []))
    text = f"{'RESOLVED' if resolved else incident.severity.upper()}: {incident.title} (incident #{incident.id})"
    parts: list[Block] = [section("\n".join(lines))]
    if footer:
        parts.append(context(footer))
    return message_of(text, parts)


def alert_line(alert: dict, *, resolved: bool = False) -> Message:
    icon = ":heavy_check_mark:" if resolved else ":heavy_plus_sign:"
    verb = "resolved" if resolved else "firing"
    labels = json.loads(alert["labels"]) if isinstance(alert["labels"], str) else alert["labels"]
    where = ", ".join(f"{k}={labels[k]}" for k in ("namespace", "pod", "service", "destination_service_name")
                      if labels.get(k))
    text = f"Alert {verb}: {alert['alertname']}" + (f" ({where})" if where else "")
    summary = alert.get("summary") or ""
    body = f"{icon} *Alert {verb}:* {escape(alert['alertname'])}" + (f" ({escape(where)})" if where else "")
    if summary and not resolved:
        body += f"\n{escape(summary)}"
    return message_of(text, [section(body)])


def incident_resolved_note(incident, now, actor: str | None = None) -> Message:
    who = f" by <@{actor}>" if actor else ""
    text = f"Incident #{incident.id} resolved{who} after {incident.duration(now)}"
    return message_of(text, [section(f":white_check_mark: *Resolved*{who} after {incident.duration(now)}.")])


def note_message(user: str, text: str) -> Message:
    return message_of(f"Note from <@{user}>: {text}", [section(f":memo: *Note from <@{user}>:* {escape(text)}")])


def suggestions_blocks(suggestions: Sequence, *, extra: str | None = None) -> list[Block]:
    """Suggested remediations as text (approval buttons are added by the approvals flow)."""
    if not suggestions:
        return []
    lines = ["*Suggested remediations* (each needs two approvals before it runs):"]
    for s in suggestions:
        line = f"\u2022 *{escape(s.title)}*"
        if s.action:
            line += f" \u2014 `/mesh {escape(s.action)}`"
        if s.advice:
            line += f"\n    {escape(s.advice)}"
        lines.append(line)
    if extra:
        lines.append(extra)
    return [DividerBlock(), section("\n".join(lines))]


def manual_incident_message(incident, requester: str, action: str) -> Message:
    """The top message of an incident opened by a remediation request typed outside any incident."""
    text = f"Incident #{incident.id}: <@{requester}> requested /mesh {action}"
    return message_of(text, [section(f":wrench: *Incident #{incident.id} \u00b7 Remediation requested*\n"
                                     f"<@{requester}> asked for `/mesh {escape(action)}`. The plan, the approvals "
                                     "and the outcome are in this thread.")])
