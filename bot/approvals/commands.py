"""Slack's side of approvals: ``/mesh permissive-mtls|bypass|restart|memory`` and the buttons.

Planning (a precondition diagnosis, the plan, the server-side dry run) talks to the cluster, so the messenger
pool hands it at once to the approvals' own pool (``ApprovalDesk.workers``), never the worker pool that a storm
of incident diagnoses can fill; clicks only touch SQLite (and Slack for approver groups) and run where they arrive.  Every answer
to the person who clicked is ephemeral; the thread shows the request's state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.approvals import blocks as approval_blocks
from bot.approvals.desk import ApprovalDesk, request_number
from bot.approvals.rule import Vote
from bot.incidents.commands import incident_number
from bot.incidents.conversation import Conversation
from bot.slack.app import Buttons, Handler, Invocation, run_in_background
from bot.slack.errors import explaining
from bot.slack.roles import Permission
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
    ActionName.MEMORY: "ask to raise a Deployment container's memory, e.g. istiod's (needs approvals)",
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
class RequestVerb:
    """``/mesh approve|reject|rollback N``: what the buttons do, typed (a phone, a screen reader)."""

    request_id: int


def request_verb_parser(verb: str) -> Parser:
    def parse_verb(words: list[str], rest: str) -> RequestVerb:
        if len(words) != 1:
            raise UsageError(f"usage: `/mesh {verb} N` (N: the request number its card shows)")
        number = request_number(words[0].lstrip("#"))
        if number is None:
            raise UsageError(f"`{words[0][:20]}` is not a request number. Usage: `/mesh {verb} N`")
        return RequestVerb(number)
    return parse_verb


@dataclass(frozen=True)
class ApprovalCommands:
    """Asking plans against the cluster, so ``ask``, ``roll_back`` and ``take_suggestion`` run on the approvals'
    pool (``on_approvals_pool``); votes only touch the database and run on the messenger pool."""

    desk: ApprovalDesk
    istio_namespace: str
    conversation: Callable[[str, str | None], Conversation | None] | None = None
    """The open incident a request typed without ``--incident`` belongs to (one conversation per outage)."""

    def ask(self, who: Invocation, request: ActionRequest) -> None:
        target = parse_action(request.words, istio_namespace=self.istio_namespace)
        incident_id, attached = request.incident_id, ""
        if incident_id is None and self.conversation is not None:
            # A restart typed during an outage belongs in that outage's thread, not in an incident of its own.
            found = self.conversation(who.channel, target.namespace)
            if found is not None:
                incident_id = found.incident_id
                attached = (f" It is part of incident #{found.incident_id}, which is open about `{target.namespace}` "
                            "(`--incident ID` picks another).")
        with explaining(f"cannot plan `/mesh {target.command}`"):
            request_id = self.desk.request(target, requester=who.user, reason=request.reason,
                                           channel=who.channel, incident_id=incident_id)
        policy = self.desk.policy
        who.tell(f"Request #{request_id} for `/mesh {target.command}` is in the thread. It runs once "
                 f"{policy.required} approver(s) other than you approve it (within "
                 f"{int(policy.ttl.total_seconds() // 60)} minutes).{attached}")

    def approve_typed(self, who: Invocation, request: RequestVerb) -> None:
        self._vote(who, str(request.request_id), Vote.APPROVE)

    def reject_typed(self, who: Invocation, request: RequestVerb) -> None:
        self._vote(who, str(request.request_id), Vote.REJECT)

    def roll_back_typed(self, who: Invocation, request: RequestVerb) -> None:
        self.roll_back(who, str(request.request_id))

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

    def roll_back_later(self, who: Invocation, value: str) -> None:
        request_id = button_number(value)
        try:
            answer = self.desk.defer_rollback(request_id, who.user)
        except UserError as exc:
            self.desk.record_refused_click(who.user, approval_blocks.ROLL_BACK_LATER, value, str(exc))
            raise
        who.tell(answer.text)

    def roll_back(self, who: Invocation, value: str) -> None:
        with explaining("cannot roll back"):
            request_id = self.desk.request_rollback(button_number(value), requester=who.user)
        who.tell(f"Rollback request #{request_id} is in the thread; it needs approvals like any other action.")

    def take_suggestion(self, who: Invocation, value: str) -> None:
        """A playbook button: the action comes from the incident's stored diagnostics, not from the button."""
        incident_part, _, index_part = value.partition(":")
        incident_id, index = button_number(incident_part), button_number(index_part)
        diagnosis = self.desk.incidents.latest_diagnosis(incident_id)
        suggestion = diagnosis.suggestion(index) if diagnosis else None
        if suggestion is None:
            raise UserError("that suggestion is no longer available; use the `/mesh` command it shows")
        target = parse_action(suggestion["action"].split(), istio_namespace=self.istio_namespace)
        request_id = self.desk.request(target, requester=who.user, channel=who.channel,
                                       reason=f"suggested by the playbook: {suggestion['title']}",
                                       incident_id=incident_id)
        who.tell(f"Request #{request_id} is in the thread; it needs approvals before anything changes.")


def refuse_without_cluster(who: Invocation, request: object) -> None:
    who.tell(NO_LIVE_CLUSTER)


def on_approvals_pool(desk: ApprovalDesk, handle: Handler) -> Handler:
    """``handle`` handed from the messenger pool to the approvals' own pool: during a storm of 40 incidents an
    ask waited behind their diagnoses on the shared worker pool (issue 23)."""
    def hand_over(who: Invocation, request: object) -> None:
        desk.workers.submit(run_in_background, handle, who, request)
    return hand_over


def register(commands: SlashCommands, buttons: Buttons, desk: ApprovalDesk | None, *, istio_namespace: str,
             conversation: Callable[[str, str | None], Conversation | None] | None = None) -> None:
    """The action sub-commands and buttons; without a desk (a captured scenario) they explain why not.

    Asking for an action or a rollback needs REQUEST (MESHBOT_REQUEST_BY); approving and rejecting are judged
    by the two-person rule itself (``bot.approvals.rule``), so those buttons and the commands typed for them
    declare no permission of their own."""
    approvals = ApprovalCommands(desk, istio_namespace, conversation) if desk is not None else None
    ask: Handler = refuse_without_cluster
    roll_back_typed = roll_back = take_suggestion = ask
    if desk is not None and approvals is not None:  # what plans against the cluster: on the approvals' pool
        ask, roll_back_typed, roll_back, take_suggestion = (on_approvals_pool(desk, handle) for handle in (
            approvals.ask, approvals.roll_back_typed, approvals.roll_back, approvals.take_suggestion))
    for name in ActionName:
        commands.add(name.value, usage=f"{USAGE[name]} {ACTION_OPTIONS}", summary=SUMMARIES[name],
                     parse=action_parser(name.value), handle=ask, permission=Permission.REQUEST)
    # Everything a button does can be typed, under the same rule and audit (the click path itself).
    commands.add("approve", usage="approve N", summary="approve request N, as its Approve button does",
                 parse=request_verb_parser("approve"),
                 handle=approvals.approve_typed if approvals else refuse_without_cluster)
    commands.add("reject", usage="reject N", summary="reject request N, as its Reject button does",
                 parse=request_verb_parser("reject"),
                 handle=approvals.reject_typed if approvals else refuse_without_cluster)
    commands.add("rollback", usage="rollback N", summary="ask to roll back request N (needs approvals like any "
                 "action)", parse=request_verb_parser("rollback"),
                 handle=roll_back_typed, permission=Permission.REQUEST)
    buttons.add(approval_blocks.APPROVE, approvals.approve if approvals else refuse_without_cluster)
    buttons.add(approval_blocks.REJECT, approvals.reject if approvals else refuse_without_cluster)
    buttons.add(approval_blocks.ROLLBACK, roll_back, permission=Permission.REQUEST)
    # Leaving a rollback for later changes nothing in the cluster, but it is a decision about one: REQUEST.
    buttons.add(approval_blocks.ROLL_BACK_LATER, approvals.roll_back_later if approvals else refuse_without_cluster,
                permission=Permission.REQUEST)
    buttons.add(approval_blocks.SUGGESTED, take_suggestion, permission=Permission.REQUEST)
    if desk is not None:
        buttons.audit_refused_clicks(desk.record_refused_click)
