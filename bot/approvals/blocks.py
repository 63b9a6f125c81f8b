"""Approval requests as Slack messages.  Pure.  Buttons carry only the request's ID."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import Block, ButtonElement, ConfirmObject, DividerBlock

from bot.approvals.card import effect_lines, not_yet_line, review_blocks, shortened_effect_lines, what_changes
from bot.approvals.rule import RequestState
from bot.approvals.store import ApprovalRequest
from bot.approvals.verification import verified_by_effect
from bot.incidents.blocks import ROLLBACK_BUTTON, SUGGESTED_BUTTON
from bot.slack.blocks import Message, buttons, clip, context, escape, message_of, section
from commands.actions import plan_diff
from commands.actions.effect import EffectReport
from commands.actions.plan import changed_lines

APPROVE = "approval_approve"
REJECT = "approval_reject"
ROLL_BACK_LATER = "approval_rollback_later"
# The incident's top message carries these two (bot.incidents.blocks owns their ids); approvals handle them.
ROLLBACK = ROLLBACK_BUTTON
SUGGESTED = SUGGESTED_BUTTON

MAX_DIFF = 2400
MAX_CONFIRM_TEXT = 300  # Slack's limit for a confirmation dialog's text
MAX_NOTES = 8

STATE_LINE = {
    RequestState.REJECTED: ":no_entry: *Rejected*",
    RequestState.EXPIRED: ":hourglass: *Expired* \u2014 nothing was changed; ask again if it is still needed",
    RequestState.EXECUTING: ":gear: *Approved \u2014 executing\u2026*",
    RequestState.SUCCEEDED: ":white_check_mark: *Done*",
    RequestState.FAILED: ":x: *Failed*",
}


def _people(users: Sequence[str]) -> str:
    return ", ".join(f"<@{u}>" for u in users)


def _status(request: ApprovalRequest, now: datetime) -> str:
    if request.state == RequestState.PENDING:
        line = (f":hourglass_flowing_sand: *Waiting for approval* \u2014 {len(request.approvals)}/{request.required}"
                f"{' (' + _people(request.approvals) + ')' if request.approvals else ''}; expires "
                f"<!date^{int(request.expires_at.timestamp())}^{{time}}|{request.expires_at:%H:%M} UTC>")
        return line
    line = STATE_LINE[request.state]
    if request.deferred:
        return (f":leftwards_arrow_with_hook: *Rollback left for later* by <@{request.decided_by}> — request "
                f"#{request.rollback_of}'s change stays in place")
    if request.decided_by and request.state == RequestState.REJECTED:
        line += f" by <@{request.decided_by}>"
    if request.approvals and request.state != RequestState.REJECTED:
        line += f" \u00b7 approved by {_people(request.approvals)}"
    return line


def _outcome_lines(request: ApprovalRequest) -> list[str]:
    lines: list[str] = []
    result = request.result or {}
    if result.get("error"):
        lines.append(f"*Error:* {escape(result['error'])}")
    for step in result.get("steps") or []:
        if step["state"] != "done":
            lines.append(f"\u2022 {escape(step['op'])} {escape(step['origin'])}: {escape(step['state'])}")
    if result and not result.get("ok") and request.applied:
        lines.append(f"{request.applied} change(s) may be in place; *Rollback* undoes exactly those.")
    verification = request.verification or {}
    if verification:
        lines.append("*Objects:* " + ("in place" if verification.get("ok") else "NOT in place"))
        lines += [escape(line) for line in verification.get("lines") or []][:10]
        lines += effect_lines(verification)
    if request.rolled_back_by:
        # Set only once the rollback request has executed: the change is gone.
        lines.append(f":leftwards_arrow_with_hook: *Rolled back* by request #{request.rolled_back_by}: this "
                     "change is no longer in place.")
    if request.rollback_of and request.state == RequestState.SUCCEEDED:
        lines.append(f":leftwards_arrow_with_hook: Request #{request.rollback_of} is rolled back.")
    return lines


def mention(approver: str) -> str:
    """``<@U…>`` for a user, ``<!subteam^S…>`` for a user group (Slack notifies its members)."""
    return f"<!subteam^{approver}>" if approver.startswith("S") else f"<@{approver}>"


def quorum_text(required: int) -> str:
    return f"{required} approval{'s' * (required != 1)} from people other than the requester"


def _approve_confirm(request: ApprovalRequest) -> ConfirmObject:
    """The last approval runs the action at once, and the person giving it should know that."""
    action = clip(request.action, 200)
    if len(request.approvals) + 1 >= request.required:
        return ConfirmObject(title="Approve and run now?",
                             text=clip(f"Yours is the last approval needed: meshbot runs `/mesh {action}` as soon as "
                                       "you confirm.", MAX_CONFIRM_TEXT), confirm="Approve and run", deny="Cancel")
    return ConfirmObject(title="Approve this action?",
                         text=clip(f"This is approval {len(request.approvals) + 1} of {request.required}: meshbot "
                                   f"runs `/mesh {action}` once {quorum_text(request.required)} are in.",
                                   MAX_CONFIRM_TEXT),
                         confirm="Approve", deny="Cancel")


def _reject_confirm(request: ApprovalRequest) -> ConfirmObject:
    return ConfirmObject(title="Reject this request?",
                         text=clip(f"Rejecting closes request #{request.id}: nothing changes, and `/mesh "
                                   f"{request.action}` has to be asked for again.", MAX_CONFIRM_TEXT),
                         confirm="Reject", deny="Cancel", style="danger")


def request_message(request: ApprovalRequest, now: datetime, *, approvers: Sequence[str] = (),
                    plan_attached: bool = False) -> Message:
    """Status, who asked, what it changes in one line, the buttons — then the diff and the notes.

    ``approvers`` are @-mentioned while the request waits; a diff longer than MAX_DIFF_LINES is only
    summarised here when ``plan_attached`` (the desk uploads the full plan next to the message).
    """
    plan = request.plan
    title = "Rollback" if request.rollback_of else "Remediation"
    lines = [f"*{title} request #{request.id}: `/mesh {escape(request.action)}`*", _status(request, now),
             f"Asked by <@{request.requester}>" + (f": {escape(request.reason)}" if request.reason else ""),
             f"*Changes:* {escape(plan.summary)}"]
    not_yet = not_yet_line(request) if request.state == RequestState.PENDING else None
    if not_yet:
        lines.append(not_yet)
    if request.state == RequestState.PENDING and approvers:
        lines.append(f"*Approvers:* {', '.join(mention(a) for a in approvers)} \u2014 "
                     f"{quorum_text(request.required)}")
    lines += _outcome_lines(request)
    parts: list[Block] = [section("\n".join(lines))]
    value = str(request.id)
    if request.state == RequestState.PENDING:
        choices = [ButtonElement(text="Approve", action_id=APPROVE, value=value, style="primary",
                                 confirm=_approve_confirm(request)),
                   ButtonElement(text="Reject", action_id=REJECT, value=value, style="danger",
                                 confirm=_reject_confirm(request))]
        if request.rollback_of is not None:
            choices.append(ButtonElement(text="Roll back later", action_id=ROLL_BACK_LATER, value=value))
        parts.append(buttons(*choices, block_id=f"approval-{request.id}"))
    elif request.can_roll_back:
        parts.append(buttons(ButtonElement(text="Rollback", action_id=ROLLBACK, value=value),
                             block_id=f"rollback-{request.id}"))
    parts.append(DividerBlock())
    parts += what_changes(request)
    parts += review_blocks(request)
    diff = plan_diff(plan)
    if diff:
        parts.append(section(_diff_text(diff, plan_attached)))
    if plan.notes:
        notes = [f"\u2022 {escape(n)}" for n in plan.notes[:MAX_NOTES]]
        if len(plan.notes) > MAX_NOTES:  # say so: a hidden note may name a rule the plan leaves alone
            notes.append(f"\u2022 \u2026 and {len(plan.notes) - MAX_NOTES} more note(s) not shown here")
        parts.append(section("*Notes:*\n" + "\n".join(notes)))
    dry = request.dry_run
    parts.append(context("Server-side dry run: " + ("passed" if dry.get("ok") else f"FAILED \u2014 "
                                                     f"{escape(str(dry.get('error')))}")
                         + f" \u00b7 plan `{request.plan_hash[:12]}`"
                         + ("" if plan.reversible else " \u00b7 no rollback for this action")))
    text = f"{title} request #{request.id}: /mesh {request.action} \u2014 {request.state}"
    return message_of(text, parts)


MAX_DIFF_LINES = 12


def diff_is_long(diff: str) -> bool:
    return len(diff.splitlines()) > MAX_DIFF_LINES or len(diff) > MAX_DIFF


def _diff_text(diff: str, plan_attached: bool) -> str:
    if not diff_is_long(diff):
        return "*Diff:*\n```" + escape(diff) + "```"
    head = "\n".join(diff.splitlines()[:MAX_DIFF_LINES])
    rest = len(diff.splitlines()) - MAX_DIFF_LINES
    where = "the full plan is attached below" if plan_attached else "`meshbot plan` shows all of it"
    return (f"*Diff* (first {MAX_DIFF_LINES} lines; {where}):\n```" + clip(escape(head), MAX_DIFF) + "```"
            + (f"\n_\u2026{rest} more line{'s' * (rest != 1)}_" if rest > 0 else ""))


def plan_file(request: ApprovalRequest) -> str:
    """The whole plan as a text file, for a diff too long to read in the message."""
    plan = request.plan
    parts = [f"Request #{request.id}: /mesh {request.action}", f"Plan {request.plan_hash}", "", plan.summary, "",
             "What changes:"]
    for objects, values in changed_lines(plan):
        parts += [f"- {objects}", *(f"    {v}" for v in values)]
    parts += ["", plan_diff(plan)]
    if plan.notes:
        parts += ["", "Notes:", *(f"- {n}" for n in plan.notes)]
    return "\n".join(parts) + "\n"


def result_note(request: ApprovalRequest) -> Message:
    """A short thread reply so the channel hears about the outcome (the request message is edited in place)."""
    if request.state == RequestState.SUCCEEDED:
        text = f"{_executed(request)} (request #{request.id})."
        look = (request.verification or {}).get("effect")
        if look and look.get("lines"):
            text += " " + "; ".join(escape(line) for line in shortened_effect_lines(list(look["lines"]), 3))
    elif request.state == RequestState.FAILED:
        text = (f":x: `/mesh {escape(request.action)}` failed (request #{request.id}): "
                f"{escape(str((request.result or {}).get('error')))}")
    elif request.deferred:
        text = (f":leftwards_arrow_with_hook: <@{request.decided_by}> left rollback #{request.id} for later: request "
                f"#{request.rollback_of}'s change stays in place, and its Rollback button stays on the incident.")
    elif request.state == RequestState.REJECTED:
        text = f":no_entry: Request #{request.id} (`/mesh {escape(request.action)}`) was closed: nothing changed."
    else:
        text = f":hourglass: Request #{request.id} (`/mesh {escape(request.action)}`) expired: nothing changed."
    return message_of(text, [section(text)])


def _executed(request: ApprovalRequest) -> str:
    """"Verified" only when the effect was seen; the objects being in place is not enough."""
    action = f"`/mesh {escape(request.action)}`"
    verification = request.verification or {}
    if not verification.get("ok"):
        return f":warning: {action} executed but its objects are NOT in place"
    look = verification.get("effect")
    if verified_by_effect(verification):
        return f":white_check_mark: {action} executed and verified by its effect"
    if not look:
        return f":white_check_mark: {action} executed; its objects are in place (effect not measured)"
    return f":warning: {action} executed; effect {look.get('outcome')}"


def follow_up_note(request: ApprovalRequest, report: EffectReport) -> Message:
    """The second look, a few minutes after execution, as a thread reply."""
    head = {"seen": ":white_check_mark: verified by its effect", "partly seen": ":large_yellow_circle: effect partly "
            "seen", "not seen": ":x: effect NOT seen", "not measured": ":grey_question: effect not measured"}
    text = (f"Follow-up on `/mesh {escape(request.action)}` (request #{request.id}): {head[str(report.outcome)]}. "
            + "; ".join(escape(line) for line in shortened_effect_lines(list(report.lines), 4)))
    return message_of(text, [section(text)])


def suggestion_buttons(incident_id: int, suggestions: Sequence) -> list[Block]:
    """Playbook suggestions with an action become buttons that open an approval request."""
    lines = ["*Suggested remediations* (each needs approval before it runs):"]
    elements: list[ButtonElement] = []
    for index, suggestion in enumerate(suggestions):
        line = f"\u2022 *{escape(suggestion.title)}*"
        if suggestion.action:
            line += f" \u2014 `/mesh {escape(suggestion.action)}`"
            if len(elements) < 5:
                elements.append(ButtonElement(text=clip(f"Request: {suggestion.action}", 75),
                                              action_id=f"{SUGGESTED}:{index}", value=f"{incident_id}:{index}"))
        if suggestion.advice:
            line += f"\n    {escape(suggestion.advice)}"
        lines.append(line)
    if not suggestions:
        return []
    parts: list[Block] = [DividerBlock(), section("\n".join(lines))]
    if elements:
        parts.append(buttons(*elements, block_id=f"suggestions-{incident_id}"))
    return parts
