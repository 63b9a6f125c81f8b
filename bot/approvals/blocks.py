"""Approval requests as Slack messages.  Pure.  Buttons carry only the request's ID."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import Block, ButtonElement, ConfirmObject, DividerBlock

from bot.approvals.rule import RequestState
from bot.approvals.store import ApprovalRequest
from bot.slack.blocks import Message, buttons, clip, context, escape, message_of, section
from commands.actions import plan_diff

APPROVE = "approval_approve"
REJECT = "approval_reject"
ROLLBACK = "approval_rollback"
SUGGESTED = "remediation_request"

MAX_DIFF = 2400
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
        lines.append("*Verify:* " + ("passed" if verification.get("ok") else "FAILED"))
        lines += [escape(line) for line in verification.get("lines") or []][:10]
    if request.rolled_back_by:
        lines.append(f":leftwards_arrow_with_hook: Rollback requested as request #{request.rolled_back_by}")
    return lines


def request_message(request: ApprovalRequest, now: datetime) -> Message:
    plan = request.plan
    title = "Rollback" if request.rollback_of else "Remediation"
    head = (f":rotating_light: *{title} request #{request.id}: `/mesh {escape(request.action)}`*\n"
            f"Asked by <@{request.requester}>" + (f": {escape(request.reason)}" if request.reason else ""))
    parts: list[Block] = [section(head), section(f"*Plan:* {escape(plan.summary)}")]
    diff = plan_diff(plan)
    if diff:
        parts.append(section("```" + clip(escape(diff), MAX_DIFF) + "```"))
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
    parts.append(DividerBlock())
    status = [_status(request, now)] + _outcome_lines(request)
    parts.append(section("\n".join(status)))
    value = str(request.id)
    if request.state == RequestState.PENDING:
        parts.append(buttons(
            ButtonElement(text="Approve", action_id=APPROVE, value=value, style="primary",
                          confirm=ConfirmObject(title="Approve this action?",
                                                text=f"meshbot will run `{clip(request.action, 200)}` once "
                                                     f"{request.required} people have approved.",
                                                confirm="Approve", deny="Cancel")),
            ButtonElement(text="Reject", action_id=REJECT, value=value, style="danger"),
            block_id=f"approval-{request.id}"))
    elif request.can_roll_back:
        parts.append(buttons(ButtonElement(text="Rollback", action_id=ROLLBACK, value=value),
                             block_id=f"rollback-{request.id}"))
    text = f"{title} request #{request.id}: /mesh {request.action} \u2014 {request.state}"
    return message_of(text, parts)


def result_note(request: ApprovalRequest) -> Message:
    """A short thread reply so the channel hears about the outcome (the request message is edited in place)."""
    if request.state == RequestState.SUCCEEDED:
        verified = "verified" if (request.verification or {}).get("ok") else "NOT verified"
        text = f":white_check_mark: `/mesh {escape(request.action)}` executed and {verified} (request #{request.id})."
    elif request.state == RequestState.FAILED:
        text = (f":x: `/mesh {escape(request.action)}` failed (request #{request.id}): "
                f"{escape(str((request.result or {}).get('error')))}")
    elif request.state == RequestState.REJECTED:
        text = f":no_entry: Request #{request.id} (`/mesh {escape(request.action)}`) was closed: nothing changed."
    else:
        text = f":hourglass: Request #{request.id} (`/mesh {escape(request.action)}`) expired: nothing changed."
    return message_of(text, [section(text)])


def suggestion_buttons(incident_id: int, suggestions: Sequence) -> list[Block]:
    """Playbook suggestions with an action become buttons that open an approval request."""
    lines = ["*Suggested remediations* (each needs approval before it runs):"]
    elements = []
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
