"""Slack's side of approvals: ``/mesh permissive-mtls|bypass|restart`` and the buttons.

Planning talks to the cluster, so it runs on the worker pool; clicks only touch
SQLite (and Slack for approver groups) and run where they arrive.  Every answer
to the person who clicked is ephemeral; the thread shows the request's state.
"""

from __future__ import annotations

from bot.approvals import blocks as approval_blocks
from bot.slack.app import Invocation, Services, handles, handles_action, run_in_background
from bot.approvals.rule import Vote
from bot.approvals.desk import request_number
from bot.slack.slash import ActionRequest
from commands.actions import ActionUsageError, parse_action
from commands.errors import MeshbotError, UserError

def _desk(services: Services, who: Invocation):
    if services.approvals is None:
        who.tell("Remediation actions need a live cluster; this meshbot runs on a captured scenario.")
    return services.approvals


def _number(value: str) -> int:
    number = request_number(value)
    if number is None:
        raise UserError("this button is malformed; nothing was done")
    return number


@handles(ActionRequest)
def handle_action_request(services: Services, who: Invocation, request: ActionRequest) -> None:
    if _desk(services, who) is not None:
        services.workers.submit(run_in_background, services, _open_request, who, request)


def _open_request(services: Services, who: Invocation, request: ActionRequest) -> None:
    target = parse_action(request.words, istio_namespace=services.settings.istio_namespace)
    try:
        request_id = services.approvals.request(target, requester=who.user, reason=request.reason,
                                                channel=who.channel, incident_id=request.incident_id)
    except MeshbotError as exc:
        who.tell(f":warning: cannot plan `/mesh {target.command}`: {exc}")
        return
    policy = services.approvals.policy
    who.tell(f"Request #{request_id} for `/mesh {target.command}` is in the thread. It runs once {policy.required} "
             f"approver(s) other than you press Approve (within {int(policy.ttl.total_seconds() // 60)} minutes).")


def _vote(services: Services, who: Invocation, value: str, vote: Vote) -> None:
    desk = _desk(services, who)
    if desk is None:
        return
    try:
        answer = desk.click(_number(value), who.user, vote)
    except UserError as exc:  # a malformed button or an unknown request
        desk.record_refused_click(who.user, str(vote), value, str(exc))
        who.tell(f":warning: {exc}")
        return
    who.tell(answer.text)


@handles_action(approval_blocks.APPROVE)
def handle_approve(services: Services, who: Invocation, value: str) -> None:
    _vote(services, who, value, Vote.APPROVE)


@handles_action(approval_blocks.REJECT)
def handle_reject(services: Services, who: Invocation, value: str) -> None:
    _vote(services, who, value, Vote.REJECT)


@handles_action(approval_blocks.ROLLBACK)
def handle_rollback(services: Services, who: Invocation, value: str) -> None:
    if _desk(services, who) is not None:
        services.workers.submit(run_in_background, services, _open_rollback, who, value)


def _open_rollback(services: Services, who: Invocation, value: str) -> None:
    try:
        request_id = services.approvals.request_rollback(_number(value), requester=who.user)
    except MeshbotError as exc:
        who.tell(f":warning: cannot roll back: {exc}")
        return
    who.tell(f"Rollback request #{request_id} is in the thread; it needs approvals like any other action.")


@handles_action(approval_blocks.SUGGESTED)
def handle_suggestion(services: Services, who: Invocation, value: str) -> None:
    if _desk(services, who) is not None:
        services.workers.submit(run_in_background, services, _open_suggested, who, value)


def _open_suggested(services: Services, who: Invocation, value: str) -> None:
    """A playbook button: the action comes from the incident's stored diagnostics, not from the button."""
    incident_part, _, index_part = value.partition(":")
    try:
        incident_id, index = _number(incident_part), _number(index_part)
        log = services.approvals.incidents
        runs = [e for e in log.timeline(incident_id) if e.kind == "diagnostics_run"]
        suggested = runs[-1].data.get("suggested") if runs else None
        if not suggested or index >= len(suggested) or not suggested[index].get("action"):
            raise UserError("that suggestion is no longer available; use the `/mesh` command it shows")
        target = parse_action(suggested[index]["action"].split(), istio_namespace=services.settings.istio_namespace)
        request_id = services.approvals.request(target, requester=who.user, channel=who.channel,
                                                reason=f"suggested by the playbook: {suggested[index]['title']}",
                                                incident_id=incident_id)
    except (MeshbotError, ActionUsageError) as exc:
        who.tell(f":warning: {exc}")
        return
    who.tell(f"Request #{request_id} is in the thread; it needs approvals before anything changes.")
