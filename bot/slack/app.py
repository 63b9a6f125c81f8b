"""Builds the Bolt app and registers its listeners; the work itself lives in the handler modules.

Slack wants an answer within 3 seconds.  Every listener therefore acks at once,
in the request thread, after pure checks only (parsing, channel allowlist), and
hands the slow part to the bounded worker pool.  (Bolt's lazy listeners would
do the same but deep-copy every request and share their executor with the acks;
under load acks then queue behind diagnoses.)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.slack import blocks
from bot.diagnosis import Diagnostician
from bot.server.metrics import Metrics
from bot.settings import Settings
from bot.slack.client import SlackClient, SlackError
from bot.slack.slash import DiagnoseRequest, HelpRequest, UsageError, help_text, parse
from commands.report import diagnose_text

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What listeners need; built once in ``bot.server.meshbot``."""

    settings: Settings
    slack: SlackClient
    diagnostician: Diagnostician
    metrics: Metrics
    workers: ThreadPoolExecutor
    """Slow work (diagnoses, actions). Handlers themselves run on the messenger pool, which only talks
    to Slack, so the "Running…" message appears at once even when every worker is busy."""
    incident_flow: Any = None
    """bot.incidents.flow.IncidentFlow, once wired by bot.server.meshbot."""
    approvals: Any = None
    """bot.approvals.desk.ApprovalDesk; None when actions are impossible (a captured scenario)."""
    reminders: Any = None
    """bot.reminders.service.ReminderService; None when reminders are off."""


@dataclass(frozen=True)
class Invocation:
    """Who typed the command, where, and how to answer them privately."""

    user: str
    channel: str
    respond: Callable[..., Any]

    def tell(self, text: str) -> None:
        """An ephemeral answer through the command's response_url (works even before the bot is invited)."""
        try:
            self.respond(text=text, response_type="ephemeral", replace_original=False)
        except Exception:  # the user's private answer is best effort; the log keeps the reason
            log.warning("could not send an ephemeral answer to %s in %s", self.user, self.channel, exc_info=True)


Handler = Callable[[Services, Invocation, Any], None]
HANDLERS: dict[type, Handler] = {}
"""Request type -> what to do in the background; modules register theirs with ``@handles``."""


def handles(request_type: type) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[request_type] = handler
        return handler
    return register


ACTION_HANDLERS: dict[str, Handler] = {}
"""Button action_id (before any ``:suffix``) -> what to do with the button's value."""


def handles_action(action_id: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ACTION_HANDLERS[action_id] = handler
        return handler
    return register


def channel_refusal(settings: Settings, channel: str) -> str | None:
    """The polite refusal for a channel outside MESHBOT_ALLOWED_CHANNELS, or None when allowed."""
    allowed = settings.allowed_channels
    if not allowed or channel in allowed:
        return None
    where = ", ".join(f"<#{c}>" for c in allowed)
    return f"Sorry, meshbot only answers in {where}. Please ask there."


def usage_answer(error: UsageError) -> str:
    return f":warning: {error}\n\n{help_text()}"


def build_bolt_app(services: Services, web_client: WebClient, executor: ThreadPoolExecutor) -> App:
    settings = services.settings
    app = App(signing_secret=settings.slack_signing_secret or "unused-in-socket-mode",
              client=web_client, token_verification_enabled=False, listener_executor=executor,
              raise_error_for_unhandled_request=False, request_verification_enabled=True,
              # Listeners run in the request thread and only ack; slow work goes to `executor`.
              process_before_response=True,
              logger=logging.getLogger("meshbot.bolt"))

    def mesh_command(ack: Ack, command: dict, respond: Respond) -> None:
        refusal = channel_refusal(settings, command.get("channel_id", ""))
        if refusal:
            log.info("refused /mesh from %s in %s: channel not allowed", command.get("user_id"),
                     command.get("channel_id"))
            ack(text=refusal, response_type="ephemeral")
            return
        try:
            request = parse(command.get("text", ""))
        except UsageError as exc:
            ack(text=usage_answer(exc), response_type="ephemeral")
            return
        handler = HANDLERS.get(type(request))
        if isinstance(request, HelpRequest) or handler is None:
            ack(text=help_text(), response_type="ephemeral")
            return
        ack()
        invocation = Invocation(user=command["user_id"], channel=command["channel_id"], respond=respond)
        executor.submit(run_in_background, services, handler, invocation, request)

    def block_action(ack: Ack, body: dict, action: dict, respond: Respond) -> None:
        ack()
        invocation = Invocation(user=(body.get("user") or {}).get("id", ""),
                                channel=(body.get("channel") or {}).get("id", ""), respond=respond)
        button = str(action.get("action_id", "")).split(":", 1)[0]
        value = str(action.get("value") or "")
        refusal = channel_refusal(settings, invocation.channel)
        if refusal:
            executor.submit(invocation.tell, refusal)
            if services.approvals is not None:
                executor.submit(services.approvals.record_refused_click, invocation.user, button, value, refusal)
            return
        handler = ACTION_HANDLERS.get(button)
        if handler is not None:
            executor.submit(run_in_background, services, handler, invocation, value)

    app.command("/mesh")(mesh_command)
    if ACTION_HANDLERS:
        names = "|".join(re.escape(name) for name in sorted(ACTION_HANDLERS))
        app.action(re.compile(rf"^({names})(:\d+)?$"))(block_action)
    return app


def run_in_background(services: Services, handler: Handler, invocation: Invocation, request: Any) -> None:
    """A command's background part; its failures end as a private answer, not a traceback."""
    try:
        handler(services, invocation, request)
    except Exception:
        log.exception("/mesh %s for %s failed", type(request).__name__, invocation.user)
        invocation.tell(":x: meshbot hit an internal error; the details are in its log.")


# -- /mesh status|proxy-status|certs|envoy|analyze|diagnose ----------------------------

NOT_IN_CHANNEL = {"not_in_channel", "channel_not_found", "is_archived"}


def invite_hint(error: SlackError) -> str:
    if error.error in NOT_IN_CHANNEL:
        return ("meshbot is not a member of this channel, so it cannot post the results here. "
                "Invite it with `/invite @meshbot` and try again.")
    return f"meshbot could not post to Slack ({error.error}); it will not run the diagnosis."


@handles(DiagnoseRequest)
def handle_diagnose(services: Services, who: Invocation, request: DiagnoseRequest) -> None:
    started = blocks.running(request.label, request.namespace, who.user)
    try:
        top = services.slack.post_message(who.channel, started.text, started.blocks)
    except SlackError as exc:
        who.tell(invite_hint(exc))
        return
    services.workers.submit(run_in_background, services, _diagnose_and_report, who, (request, top))


def _diagnose_and_report(services: Services, who: Invocation, job: tuple[DiagnoseRequest, Any]) -> None:
    request, top = job
    slack, metrics = services.slack, services.metrics
    label, namespace = request.label, request.namespace
    result = services.diagnostician.run(request.checks, namespace)
    metrics.diagnosis_seconds.labels(check=label).observe(result.seconds)
    if result.error:
        problem = blocks.cluster_unavailable(result.error)
        slack.post_message(who.channel, problem.text, problem.blocks, thread_ts=top.ts)
        done = blocks.failed(label, namespace, who.user, result.error)
        slack.update_message(who.channel, top.ts, done.text, done.blocks)
        return
    title = f"{label} \u00b7 {namespace or 'all namespaces'}"
    report, hidden = blocks.findings_report(title, result.findings)
    slack.post_message(who.channel, report.text, report.blocks, thread_ts=top.ts)
    for finding in result.findings:
        metrics.findings_posted.labels(level=str(finding.level)).inc()
    if hidden:
        slack.upload_text(who.channel, top.ts, filename=f"meshbot-{label}-{namespace or 'all'}.txt",
                          title=f"Full report: {title} ({len(result.findings)} findings)",
                          content=diagnose_text(result.findings, title=title))
    done = blocks.outcome(label, namespace, who.user, result.findings, result.seconds)
    slack.update_message(who.channel, top.ts, done.text, done.blocks)
