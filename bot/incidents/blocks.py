"""An incident's messages: the top-level message and its buttons, the triage reply, the thread's notes. Pure.

The top message is read back from the incident log (``bot.incidents.headline`` builds its ``TopView``),
so a restart renders the same message.  Its button ids are owned here; the approvals feature handles
them.  The primitives (clipping to Slack's limits, escaping) are ``bot.slack.blocks``'.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import Block, ButtonElement, DividerBlock

from bot.incidents.lifecycle import Lifecycle
from bot.incidents.playbooks import SuggestedRemediation
from bot.incidents.records import Incident, IncidentStatus
from bot.slack.blocks import (
    Message,
    buttons,
    clip,
    context,
    escape,
    human_duration,
    link,
    message_of,
    plain,
    plural,
    section,
    slack_time,
    utc_time,
)
from bot.timeline.blocks import top_lines
from bot.timeline.summary import TimelineSummary
from commands.times import parse_rfc3339
from commands.triage import Cause

SEVERITY_EMOJI = {"critical": ":rotating_light:", "error": ":red_circle:", "warning": ":warning:"}
SUGGESTED_BUTTON = "remediation_request"
"""A suggested action's button (value ``INCIDENT:INDEX`` into the incident's stored suggestions)."""
ROLLBACK_BUTTON = "approval_rollback"
"""Rollback of a finished request (value: the request number)."""
MAX_DESCRIPTION = 500
MAX_TOP_LINES = 10
"""The top message at 3 AM: status, since when, cause, first step, owner (issue 27)."""
MAX_STEP_TEXT = 240
"""A first step is one line here; the triage reply and the attached report have it whole."""
"""The top message at 3 AM: status, since when, cause, first step, owner (issue 27)."""


@dataclass(frozen=True)
class FirstStep:
    summary: str
    action: str | None = None
    """A meshbot action (``permissive-mtls prod``): offered as a button that asks for approval."""
    command: str | None = None
    """Otherwise the command to run by hand."""
    button_value: str | None = None
    """``INCIDENT:INDEX`` of the action among the incident's stored suggestions."""


@dataclass(frozen=True)
class Headline:
    """The probable cause an incident's triage puts first."""

    key: str
    title: str
    explains: str
    confidence: str
    because: tuple[str, ...] = ()
    first_step: FirstStep | None = None
    timing: str | None = None
    """The change shortly before the onset that ties to this cause, in words (``Cause.timing``)."""


@dataclass(frozen=True)
class InEffect:
    """A change an executed request left in the cluster, until it is rolled back."""

    what: str
    since: datetime
    request_id: int
    effect: str = ""
    """What verification by effect saw last ("verified: ...", "effect not seen: ..."); empty before a look."""


@dataclass(frozen=True)
class JoinedTo:
    incident_id: int
    cause: str
    thread_url: str | None = None


@dataclass(frozen=True)
class TopView:
    """Everything the incident's top-level message shows, read from the incident log."""

    incident: Incident
    alerts: Sequence[Mapping[str, Any]] = ()
    """The incident's ``incident_alerts`` rows, oldest ``startsAt`` first."""
    runbook_url: str = ""
    description: str = ""
    headline: Headline | None = None
    diagnosed: bool = False
    joined: JoinedTo | None = None
    in_effect: tuple[InEffect, ...] = ()
    opened_by: str | None = None
    requested_action: str | None = None
    """Manual incidents: the action someone asked for outside any incident."""
    timeline: TimelineSummary | None = None
    """When it started, the failing edges and the last change before it, from the diagnosis's timeline."""
    lifecycle: Lifecycle = Lifecycle()
    """Severity set by people, the lead, the stage and its note (``bot.incidents.lifecycle``)."""
    joined_here: tuple[int, ...] = ()
    """Alert groups that joined this outage in its thread (``bot.incidents.conversation``): counted, not posted."""

    @property
    def severity(self) -> str:
        """The severity people set, else the alert's."""
        return self.lifecycle.severity or self.incident.severity

    @property
    def resolved(self) -> bool:
        return self.incident.status == IncidentStatus.RESOLVED

    @property
    def started(self) -> datetime:
        """When the trouble began: the earliest alert's ``startsAt``, not when meshbot heard of it."""
        starts = [_time(a["starts_at"]) for a in self.alerts if a.get("starts_at")]
        return min(starts) if starts else self.incident.opened_at

    def ended(self, now: datetime) -> datetime:
        """The last alert's ``endsAt`` once resolved; otherwise (or without one) when it was resolved, or now."""
        if not self.resolved:
            return now
        ends = [_time(a["ends_at"]) for a in self.alerts if a.get("ends_at")]
        if ends and len(ends) == len(self.alerts):
            return max(ends)
        return self.incident.resolved_at or now

    def lasted(self, now: datetime) -> str:
        return human_duration((self.ended(now) - self.started).total_seconds())


def _time(value: Any) -> datetime:
    """An alert row's ``starts_at``/``ends_at``, a datetime or RFC 3339 text as the row gives it."""
    return value if isinstance(value, datetime) else parse_rfc3339(str(value))


def incident_message(view: TopView, now: datetime) -> Message:
    """The incident's top-level message: the headline (probable cause, impact, first step), since when, links.

    Open: severity in bold, the cause and the first step (a button when meshbot can do it), what an
    executed action left in effect.  Resolved: no bold severity, how long it lasted from the first
    ``startsAt`` to the last ``endsAt``.  Joined: one line pointing at the incident it belongs to.
    """
    if view.joined is not None:
        return _joined_message(view, view.joined, now)
    incident = view.incident
    lines = _headline_lines(view, now)
    footer = _footer(view)
    description = view.description if view.description and not view.resolved else ""
    # Short by design (issue 27): at most MAX_TOP_LINES lines; the alert's description goes first, then the
    # timeline's lines (the thread's timeline reply has them all).
    step = view.headline.first_step if view.headline and not view.resolved else None
    has_buttons = bool(step and step.action and step.button_value) or bool(view.in_effect)
    extra = bool(description) + bool(footer) + has_buttons
    if len(_lines(lines)) + extra > MAX_TOP_LINES:
        description, extra = "", bool(footer) + has_buttons
    timeline = set(top_lines(view.timeline)) if view.timeline is not None else set()
    while len(_lines(lines)) + extra > MAX_TOP_LINES and any(line in timeline for line in lines):
        lines.remove(next(line for line in reversed(lines) if line in timeline))
    parts: list[Block] = [section("\n".join(lines))]
    elements = []
    if step and step.action and step.button_value:
        elements.append(ButtonElement(text=clip(f"Request: /mesh {step.action}", 75),
                                      action_id=f"{SUGGESTED_BUTTON}:0", value=step.button_value, style="primary"))
    for index, effect in enumerate(view.in_effect[:4], start=1):
        elements.append(ButtonElement(text=clip(f"Rollback #{effect.request_id}", 75),
                                      action_id=f"{ROLLBACK_BUTTON}:{index}", value=str(effect.request_id)))
    if elements:
        parts.append(buttons(*elements, block_id=f"incident-{incident.id}"))
    if description:
        parts.append(section("> " + escape(clip(" ".join(description.split()), MAX_DESCRIPTION))))
    if footer:
        parts.append(context(footer))
    return message_of(_fallback(view, now), parts)


def _headline_lines(view: TopView, now: datetime) -> list[str]:
    incident = view.incident
    if view.resolved and view.requested_action:
        # A request's own incident closes when nothing is left to do: rejected, rolled back or done.  That is no
        # "✔ Resolved" (rejecting a fix resolves nothing; issue 27); the thread says what happened to it.
        lines = [f":heavy_minus_sign: Closed \u00b7 {escape(incident.title)}",
                 f"Nothing is waiting, running or left to roll back \u00b7 incident #{incident.id}"]
    elif view.resolved:
        lines = [f":white_check_mark: Resolved \u00b7 {escape(incident.title)}",
                 f"Lasted {view.lasted(now)} ({_span(view, now)}) \u00b7 was {escape(incident.severity)}"
                 + (f" \u00b7 resolved by <@{incident.resolved_by}>" if _is_user(incident.resolved_by) else "")
                 + f" \u00b7 incident #{incident.id}"]
    else:
        icon = SEVERITY_EMOJI.get(view.severity, ":bell:")
        lines = [f"{icon} *{escape(view.severity.upper())} \u00b7 {escape(incident.title)}*", _since_line(view, now)]
    if view.requested_action and not view.resolved:
        who = f"<@{view.opened_by}>" if _is_user(view.opened_by) else "Someone"
        lines.append(f"{who} asked for `/mesh {escape(view.requested_action)}`; the plan, the approvals and the "
                     "outcome are in this thread.")
    where = [f"`{escape(n)}`" for n in incident.namespaces] + [f"`{escape(s)}`" for s in incident.services]
    if where and not view.resolved:
        lines[-1] += " \u00b7 in " + ", ".join(where)
    if view.timeline is not None and not view.resolved and not view.requested_action:
        lines += top_lines(view.timeline)
    lines += _cause_lines(view)
    if not view.resolved:
        lines.append(_owner_line(view))
    for effect in view.in_effect:
        lines.append(f":warning: *{escape(effect.what)} since {slack_time(effect.since)}* (request "
                     f"#{effect.request_id}) \u2014 *Rollback* undoes it"
                     + (f"\n    {escape(effect.effect)}" if effect.effect else ""))
    return lines


def _since_line(view: TopView, now: datetime) -> str:
    incident = view.incident
    elapsed = human_duration((now - view.started).total_seconds())
    if view.alerts:
        firing = sum(1 for a in view.alerts if a["status"] == "firing")
        joined = (f" \u00b7 {plural(len(view.joined_here), 'more alert group')} joined ("
                  + ", ".join(f"#{i}" for i in view.joined_here) + ")") if view.joined_here else ""
        return (f"Firing since {slack_time(view.started)} ({elapsed}) \u00b7 {plural(firing, 'alert')} firing "
                f"\u00b7 incident #{incident.id}{joined}")
    # A person by mention, meshbot by name; never the transport ("Opened by slack", issue 27).
    who = f"<@{view.opened_by}>" if _is_user(view.opened_by) else \
        "meshbot" if incident.source != "slack" else "a `/mesh` request"
    return f"Opened by {who} {slack_time(view.started)} ({elapsed}) \u00b7 incident #{incident.id}"


def _span(view: TopView, now: datetime) -> str:
    return f"{utc_time(view.started)} \u2192 {utc_time(view.ended(now))}"


def _cause_lines(view: TopView) -> list[str]:
    headline = view.headline
    if view.requested_action:
        return []
    if headline is None:
        if view.resolved:
            return []
        return (["*Probable cause:* none found in the diagnosis \u2014 see the thread"] if view.diagnosed
                else ["_Diagnosing\u2026 the probable cause and the first step will appear here._"])
    if view.resolved:
        return [f"Probable cause was: {escape(headline.title)}"]
    lines = [f"*Probable cause* ({escape(headline.confidence)} confidence): {escape(headline.title)} \u2014 "
             f"{escape(headline.explains)}"]
    if headline.timing:
        lines.append(f"*Just before the errors:* {escape(headline.timing)}")
    step = headline.first_step
    if step:
        line = f"*First step:* {escape(clip(step.summary, MAX_STEP_TEXT))}"
        if step.action:
            line += f"\n`/mesh {escape(step.action)}` (runs after approval)"
        elif step.command:
            line += f"\n`{escape(step.command)}`"
        lines.append(line)
    return lines


def _owner_line(view: TopView) -> str:
    """Who owns it and where the response stands: the lead, the stage and its note (``/mesh incident …``)."""
    lifecycle, number = view.lifecycle, view.incident.id
    lead = f"<@{lifecycle.lead}>" if _is_user(lifecycle.lead) else escape(lifecycle.lead) if lifecycle.lead \
        else f"nobody yet (`/mesh incident lead {number} @you`)"
    stage = f"*{lifecycle.stage.label}*" + (f": {escape(clip(lifecycle.stage_note, 120))}"
                                             if lifecycle.stage_note else "")
    return f"*Lead:* {lead} \u00b7 *Status:* {stage}"


def _lines(lines: Sequence[str]) -> list[str]:
    return "\n".join(lines).split("\n")


def rendered_lines(message: Message) -> int:
    """How many lines a message shows (sections and contexts by their text's lines, headers and button rows one
    each): what "short by design" counts."""
    count = 0
    for block in message.blocks:
        kind = block.get("type")
        if kind == "section":
            count += len(block["text"]["text"].split("\n"))
        elif kind in ("header", "actions"):
            count += 1
        elif kind == "context":
            count += max((len(e.get("text", "").split("\n")) for e in block.get("elements", [])), default=0)
    return count


def _footer(view: TopView) -> str:
    links = [link(view.runbook_url, "Runbook") if view.runbook_url else None]
    links += [link(a["generator_url"], "Prometheus") for a in view.alerts[:1] if a.get("generator_url")]
    links.append(link(view.incident.external_url, "Alertmanager") if view.incident.external_url else None)
    shown = [x for x in links if x]
    if view.incident.playbook:
        shown.append(f"playbook `{escape(view.incident.playbook)}`")
    return " \u00b7 ".join(shown)


def _fallback(view: TopView, now: datetime) -> str:
    incident = view.incident
    if view.resolved:
        return f"RESOLVED: {plain(incident.title)} (incident #{incident.id}) after {view.lasted(now)}"
    text = f"{plain(incident.severity.upper())}: {plain(incident.title)} (incident #{incident.id})"
    if view.headline:
        text += f" \u2014 probable cause: {plain(view.headline.title)}"
    return text


def _joined_message(view: TopView, joined: JoinedTo, now: datetime) -> Message:
    incident = view.incident
    where = f"<{joined.thread_url}|incident #{joined.incident_id}>" if joined.thread_url else \
        f"incident #{joined.incident_id}"
    if view.resolved:
        head = f":white_check_mark: Resolved \u00b7 {escape(incident.title)} \u00b7 lasted {view.lasted(now)}"
    else:
        head = (f":link: *{escape(incident.title)}* \u00b7 firing since {slack_time(view.started)} \u00b7 "
                f"incident #{incident.id}")
    body = f"{head}\nSame probable cause as {where} ({escape(joined.cause)}): the conversation is in its thread."
    text = (f"{'RESOLVED: ' if view.resolved else ''}{plain(incident.title)} (incident #{incident.id}): part of incident "
            f"#{joined.incident_id}, same probable cause")
    return message_of(text, [section(body)])


def _is_user(value: str | None) -> bool:
    """A Slack user id (``U…``/``W…``), not a service name such as ``alertmanager``."""
    return value is not None and value[:1] in ("U", "W") and value.isalnum()


def joined_note(incident: Incident, cause: str, elsewhere_link: str | None, others: Sequence[Cause] = ()) -> Message:
    """The short post in the joined incident's thread when another alert group turns out to be the same outage;
    ``others`` are causes that group found and this thread's triage does not name, with their first step."""
    other = f"<{elsewhere_link}|incident #{incident.id}>" if elsewhere_link else f"incident #{incident.id}"
    text = f"{incident.title} (incident #{incident.id}) joined this incident: same probable cause, {cause}"
    lines = [f":link: *{escape(incident.title)}* fired too ({other}); its diagnosis names the same probable cause: "
             f"{escape(cause)}. It is followed here."]
    for extra in others:
        step = extra.first_step
        line = f"\u2022 It also found: {escape(extra.title)} ({escape(extra.explains_line)})"
        if step:
            how = f"`/mesh {escape(step.action)}`" if step.action else (f"`{escape(step.command)}`" if step.command
                                                                       else "")
            line += f"\n    *First step:* {escape(step.summary)}" + (f" {how}" if how else "")
        lines.append(line)
    return message_of(text, [section("\n".join(lines))])


def alert_line(alert: Mapping[str, Any], *, resolved: bool = False) -> Message:
    icon = ":heavy_check_mark:" if resolved else ":heavy_plus_sign:"
    verb = "resolved" if resolved else "firing"
    labels = json.loads(alert["labels"]) if isinstance(alert["labels"], str) else alert["labels"]
    where = ", ".join(f"{k}={labels[k]}" for k in ("namespace", "pod", "service", "destination_service_name")
                      if labels.get(k))
    text = f"Alert {verb}: {plain(alert['alertname'])}" + (f" ({plain(where)})" if where else "")
    summary = alert.get("summary") or ""
    body = f"{icon} *Alert {verb}:* {escape(alert['alertname'])}" + (f" ({escape(where)})" if where else "")
    if summary and not resolved:
        body += f"\n{escape(summary)}"
    return message_of(text, [section(body)])


def incident_reopened_note(resolved_by: str) -> Message:
    """Alertmanager still reports the alert firing after someone resolved the incident by hand."""
    text = f"Reopened: the alert is still firing after <@{resolved_by}> resolved this incident"
    return message_of(text, [section(f":repeat: *Reopened.* Alertmanager still reports the alert firing after "
                                     f"<@{resolved_by}> resolved this incident by hand; it closes when the alert "
                                     "resolves, or resolve it again once the cause is fixed.")])


def incident_resolved_note(view: TopView, now: datetime, actor: str | None = None) -> Message:
    """The one thread reply that says it is over (Slack notifies thread followers of replies, not of edits)."""
    incident = view.incident
    if view.requested_action:
        text = f"Incident #{incident.id} closed: nothing is waiting, running or left to roll back"
        return message_of(text, [context(f":heavy_minus_sign: Closed: `/mesh {escape(view.requested_action)}` "
                                         "has nothing waiting, running or left to roll back (see above for what "
                                         "happened to it).")])
    who = f" by <@{actor}>" if _is_user(actor) else ""
    text = f"Incident #{incident.id} resolved{who}: lasted {view.lasted(now)}"
    return message_of(text, [section(f":white_check_mark: *Resolved*{who}. {escape(incident.title)} lasted "
                                     f"{view.lasted(now)} ({_span(view, now)}).")])


def linked_resolved_note(parent_id: int, linked: Sequence[int]) -> Message:
    """The incidents that were part of this outage closed with it: said once, in the outage's thread."""
    numbers = ", ".join(f"#{i}" for i in linked)
    text = f"Also resolved with incident #{parent_id}: {numbers} (part of the same outage)"
    return message_of(text, [context(f"Also resolved with it: {numbers}, which joined this outage (same probable "
                                     "cause).")])


def set_aside_note(group_key: str, notification_id: int, reason: str) -> Message:
    """An Alertmanager notification that can never apply was set aside: said once per alert group."""
    group = group_key if len(group_key) <= 200 else group_key[:200] + "\u2026"
    text = f"A notification of alert group {group} could not be applied and was set aside: {reason}"
    return message_of(text, [context(
        f":warning: Notification #{notification_id} of alert group `{escape(group)}` could not be applied and was set "
        f"aside (kept in meshbot's database): {escape(reason)}. Its alerts are in no incident; later notifications "
        "of the group are still applied, and this is said once per group.")])


def note_message(user: str, text: str) -> Message:
    return message_of(f"Note from <@{user}>: {plain(text)}", [section(f":memo: *Note from <@{user}>:* {escape(text)}")])


def suggestions_blocks(suggestions: Sequence[SuggestedRemediation], *, extra: str | None = None) -> list[Block]:
    """Suggested remediations as text (approval buttons are added by the approvals flow)."""
    if not suggestions:
        return []
    lines = ["*Suggested remediations* (each needs approval before it runs):"]
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


def manual_incident_message(incident: Incident, requester: str, action: str) -> Message:
    """The top message of an incident opened by a remediation request typed outside any incident."""
    return incident_message(TopView(incident=incident, opened_by=requester, requested_action=action,
                                    diagnosed=True), incident.opened_at)
