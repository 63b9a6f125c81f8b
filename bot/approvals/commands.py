"""Slack's side of approvals: ``/mesh permissive-mtls|bypass|restart`` and the buttons.

Planning talks to the cluster, so it runs on the worker pool; clicks only touch
SQLite (and Slack for approver groups) and run where they arrive.  Every answer
to the person who clicked is ephemeral; the thread shows the request's state.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bot.approvals import blocks as approval_blocks
from bot.approvals.desk import ApprovalDesk, request_number
from bot.approvals.rule import Vote
from bot.incidents.commands import incident_number
from bot.slack.app import Handlers, Invocation, run_in_background
from bot.slack.errors import explaining
from bot.slack.slash import Parser, SlashCommands, UsageError
from commands.actions import ActionUsageError, parse_action
from commands.actions.targets import USAGE, ActionName
from commands.errors import UserError

MAX_REASON_LENGTH = 500
ACTION_OPTIONS = "[--incident ID] [--reason TEXT]"
SUMMARIES = {
    ActionName.PERMISSIVE_MTLS: "ask to accept plain-text traffic (needs approvals)",
    ActionName.BYPASS: "ask to take a workload or namespace out of the mesh (needs approvals)",
    ActionName.RESTART: "ask for a rollout restart of istiod or a Deployment (needs approvals)",
}
NO_LIVE_CLUSTER = "Remediation actions need a live cluster; this meshbot runs on a captured scenario."


@dataclass(frozen=True)
class ActionRequest:
    words: tuple[str, ...]
    """The action as typed (``restart istiod -n istio-system``), already validated by ``parse_action``."""
    incident_id: int | None = None
    reason: str = ""


def action_parser(name: str) -> Parser:
    def parse_request(words: list[str], rest: str) -> ActionRequest:
        words = [name, *words]
        incident_id: int | None = None
        reason = ""
        if "--reason" in words:
            at = words.index("--reason")
            reason = " ".join(words[at + 1:]).strip()
            words = words[:at]
            if not reason:
                raise UsageError("`--reason` needs some text: why is this action needed?")
            if len(reason) > MAX_REASON_LENGTH:
                raise UsageError(f"a reason can be at most {MAX_REASON_LENGTH} characters")
        for flag in [w for w in words if w == "--incident" or w.startswith("--incident=")]:
            at = words.index(flag)
            value = flag.split("=", 1)[1] if "=" in flag else (words[at + 1] if at + 1 < len(words) else "")
            incident_id = incident_number(value)
            del words[at:at + (1 if "=" in flag else 2)]
        try:
            parse_action(words)
        except ActionUsageError as exc:
            raise UsageError(f"{exc} {ACTION_OPTIONS}") from None
        return ActionRequest(tuple(words), incident_id, reason)
    return parse_request


def button_number(value: str) -> int:
    number = request_number(value)
    if number is None:
        raise UserError("this button is malformed; nothing was done")
    return number


@dataclass(frozen=True)
class ApprovalCommands:
    desk: ApprovalDesk
    workers: ThreadPoolExecutor
    istio_namespace: str

    def ask(self, who: Invocation, request: ActionRequest) -> None:
        self.workers.submit(run_in_background, self._open_request, who, request)

    def _open_request(self, who: Invocation, request: ActionRequest) -> None:
        target = parse_action(request.words, istio_namespace=self.istio_namespace)
        with explaining(f"cannot plan `/mesh {target.command}`"):
            request_id = self.desk.request(target, requester=who.user, reason=request.reason,
                                           channel=who.channel, incident_id=request.incident_id)
        policy = self.desk.policy
        who.tell(f"Request #{request_id} for `/mesh {target.command}` is in the thread. It runs once "
                 f"{policy.required} approver(s) other than you press Approve (within "
                 f"{int(policy.ttl.total_seconds() // 60)} minutes).")

    def approve(self, who: Invocation, value: str) -> None:
        self._vote(who, value, Vote.APPROVE)

    def reject(self, who: Invocation, value: str) -> None:
        self._vote(who, value, Vote.REJECT)

    def _vote(self, who: Invocation, value: str, vote: Vote) -> None:
        try:
            answer = self.desk.click(button_number(value), who.user, vote)
        except UserError as exc:  # a malformed button or an unknown request: audited, then told
            self.desk.record_refused_click(who.user, str(vote), value, str(exc))
            raise
        who.tell(answer.text)

    def roll_back(self, who: Invocation, value: str) -> None:
        self.workers.submit(run_in_background, self._open_rollback, who, value)

    def _open_rollback(self, who: Invocation, value: str) -> None:
        with explaining("cannot roll back"):
            request_id = self.desk.request_rollback(button_number(value), requester=who.user)
        who.tell(f"Rollback request #{request_id} is in the thread; it needs approvals like any other action.")

    def take_suggestion(self, who: Invocation, value: str) -> None:
        self.workers.submit(run_in_background, self._open_suggested, who, value)

    def _open_suggested(self, who: Invocation, value: str) -> None:
        """A playbook button: the action comes from the incident's stored diagnostics, not from the button."""
        incident_part, _, index_part = value.partition(":")
        incident_id, index = button_number(incident_part), button_number(index_part)
        runs = [e for e in self.desk.incidents.timeline(incident_id) if e.kind == "diagnostics_run"]
        suggested = runs[-1].data.get("suggested") if runs else None
        if not suggested or index >= len(suggested) or not suggested[index].get("action"):
            raise UserError("that suggestion is no longer available; use the `/mesh` command it shows")
        target = parse_action(suggested[index]["action"].split(), istio_namespace=self.istio_namespace)
        request_id = self.desk.request(target, requester=who.user, channel=who.channel,
                                       reason=f"suggested by the playbook: {suggested[index]['title']}",
                                       incident_id=incident_id)
        who.tell(f"Request #{request_id} is in the thread; it needs approvals before anything changes.")


def refuse_without_cluster(who: Invocation, request: object) -> None:
    who.tell(NO_LIVE_CLUSTER)


BUTTONS = (approval_blocks.APPROVE, approval_blocks.REJECT, approval_blocks.ROLLBACK, approval_blocks.SUGGESTED)


def register(commands: SlashCommands, handlers: Handlers, desk: ApprovalDesk | None, *,
             workers: ThreadPoolExecutor, istio_namespace: str) -> None:
    """The action subcommands and buttons; without a desk (a captured scenario) they explain why not."""
    for name in ActionName:
        commands.add(name.value, usage=f"{USAGE[name]} {ACTION_OPTIONS}", summary=SUMMARIES[name],
                     parse=action_parser(name.value))
    if desk is None:
        handlers.on_request(ActionRequest, refuse_without_cluster)
        for button in BUTTONS:
            handlers.on_button(button, refuse_without_cluster)
        return
    approvals = ApprovalCommands(desk, workers, istio_namespace)
    handlers.on_request(ActionRequest, approvals.ask)
    handlers.on_button(approval_blocks.APPROVE, approvals.approve)
    handlers.on_button(approval_blocks.REJECT, approvals.reject)
    handlers.on_button(approval_blocks.ROLLBACK, approvals.roll_back)
    handlers.on_button(approval_blocks.SUGGESTED, approvals.take_suggestion)
    handlers.audit_refused_clicks(desk.record_refused_click)
