"""The Bolt app: acks ``/mesh`` and button presses, and runs what the features registered.

Slack wants an answer within 3 seconds.  Every listener therefore acks at once,
in the request thread, after pure checks only (parsing, channel allowlist), and
hands the rest to the messenger pool, which first checks the author's role when
the request needs one (``bot.slack.roles``: group membership may ask Slack).
(Bolt's lazy listeners would do the same
but deep-copy every request and share their executor with the acks; under load
acks then queue behind diagnoses.)

What a sub-command does is in ``SlashCommands`` (``bot.slack.slash``), what a
button does in ``Buttons``; each feature's ``register`` function fills them
from ``bot.server.wiring``, and this module knows no feature.  A handler
registered with ``background=True`` is submitted to the worker pool instead.
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

from bot.settings import Settings
from bot.slack.blocks import Message
from bot.slack.errors import usage_answer, user_message
from bot.slack.roles import Permission, RoleCheck
from bot.slack.slash import HelpRequest, SlashCommands, UsageError
from commands.errors import MeshbotError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Invocation:
    """Who typed the command, where, and how to answer them privately."""

    user: str
    channel: str
    respond: Callable[..., Any]

    def show(self, message: Message) -> None:
        """An ephemeral answer with blocks (a question with buttons); best effort like ``tell``."""
        try:
            self.respond(text=message.text, blocks=message.blocks, response_type="ephemeral",
                         replace_original=False)
        except Exception:  # the log keeps the reason; the command can be typed again
            log.warning("could not send an ephemeral question to %s in %s", self.user, self.channel, exc_info=True)

    def tell(self, text: str) -> None:
        """An ephemeral answer through the command's response_url (works even before the bot is invited)."""
        try:
            self.respond(text=text, response_type="ephemeral", replace_original=False)
        except Exception:  # the user's private answer is best effort; the log keeps the reason
            log.warning("could not send an ephemeral answer to %s in %s", self.user, self.channel, exc_info=True)


Handler = Callable[[Invocation, Any], None]
"""(who asked, the parsed request or the button's value): raises for the user to read."""


class AskFirst(Exception):
    """A handler needs its author's answer before it can go on (``bot.incidents.conversation``'s "attach to #1?").

    ``message`` (with the answer's buttons) is shown to the author only; ``hold`` is given the handler's retry,
    which the answer's button runs."""

    def __init__(self, message: Message, hold: Callable[[Callable[[], None]], None]):
        super().__init__(message.text)
        self.message = message
        self.hold = hold
RefusedClick = Callable[[str, str, str, str], None]
"""(user, button, value, reason): audits a press refused before any handler ran."""


@dataclass(frozen=True)
class Button:
    action_id: str
    handle: Handler
    permission: Permission | None = None
    """None: the handler judges the press itself (a vote checks the approver list)."""
    background: bool = False
    """True: the handler runs on the worker pool (planning reads the cluster); False: on the messenger pool."""


class Buttons:
    """What each button does; features add theirs in ``register``, one ``add`` per button."""

    def __init__(self) -> None:
        self._buttons: dict[str, Button] = {}
        self._refused_click_audits: list[RefusedClick] = []

    def add(self, action_id: str, handle: Handler, *, permission: Permission | None = None,
            background: bool = False) -> None:
        """``action_id`` is the part before any ``:suffix`` (buttons in one message need distinct IDs)."""
        if action_id in self._buttons:
            raise ValueError(f"button {action_id} has a handler already")
        self._buttons[action_id] = Button(action_id, handle, permission, background)

    def audit_refused_clicks(self, audit: RefusedClick) -> None:
        self._refused_click_audits.append(audit)

    def get(self, action_id: str) -> Button | None:
        return self._buttons.get(action_id)

    def ids(self) -> tuple[str, ...]:
        return tuple(self._buttons)

    def refused_click(self, user: str, button: str, value: str, reason: str) -> None:
        for audit in self._refused_click_audits:
            audit(user, button, value, reason)


@dataclass(frozen=True)
class Pools:
    """Where handlers run: ``messengers`` only talk to Slack; ``workers`` do the slow work."""

    messengers: ThreadPoolExecutor
    workers: ThreadPoolExecutor


def channel_refusal(settings: Settings, channel: str) -> str | None:
    """The polite refusal for a channel outside MESHBOT_ALLOWED_CHANNELS, or None when allowed."""
    allowed = settings.allowed_channels
    if not allowed or channel in allowed:
        return None
    where = ", ".join(f"<#{c}>" for c in allowed)
    return f"Sorry, meshbot only answers in {where}. Please ask there."


def build_bolt_app(settings: Settings, web_client: WebClient, pools: Pools, commands: SlashCommands,
                   buttons: Buttons, roles: RoleCheck) -> App:
    executor = pools.messengers
    app = App(signing_secret=settings.slack_signing_secret or "unused-in-socket-mode",
              client=web_client, token_verification_enabled=False, listener_executor=executor,
              raise_error_for_unhandled_request=False,
              # bot.slack.ingress verified the signature before the request got here (and answered 401
              # without parsing); Bolt's own check would log the whole body, response_url included, at INFO.
              request_verification_enabled=False,
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
            parsed = commands.command(command.get("text", ""))
        except UsageError as exc:
            ack(text=usage_answer(exc, commands.help_text()), response_type="ephemeral")
            return
        subcommand = parsed.subcommand
        if isinstance(parsed.request, HelpRequest) or subcommand.handle is None:
            ack(text=commands.help_text(), response_type="ephemeral")
            return
        ack()
        invocation = Invocation(user=command["user_id"], channel=command["channel_id"], respond=respond)
        job = Job(subcommand.handle, invocation, parsed.request, subcommand.background)
        permission = parsed.permission
        if roles.needs_check(permission):
            # Group membership may need Slack (usergroups.users.list): not on the ack path.
            executor.submit(run_if_allowed, roles, permission, commands.refused, job, pools)
        else:
            job.run(pools)

    def block_action(ack: Ack, body: dict, action: dict, respond: Respond) -> None:
        ack()
        invocation = Invocation(user=(body.get("user") or {}).get("id", ""),
                                channel=(body.get("channel") or {}).get("id", ""), respond=respond)
        action_id = str(action.get("action_id", "")).split(":", 1)[0]
        value = str(action.get("value") or "")
        refusal = channel_refusal(settings, invocation.channel)
        if refusal:
            executor.submit(invocation.tell, refusal)
            executor.submit(buttons.refused_click, invocation.user, action_id, value, refusal)
            return
        button = buttons.get(action_id)
        if button is None:
            return
        job = Job(button.handle, invocation, value, button.background)
        if button.permission is not None and roles.needs_check(button.permission):
            executor.submit(_press_if_allowed, roles, button.permission, buttons, job, action_id, pools)
        else:
            job.run(pools)

    app.command("/mesh")(mesh_command)
    if buttons.ids():
        names = "|".join(re.escape(name) for name in sorted(buttons.ids()))
        app.action(re.compile(rf"^({names})(:\d+)?$"))(block_action)
    return app


@dataclass(frozen=True)
class Job:
    """A handler with what it was given, and the pool it belongs on."""

    handle: Handler
    invocation: Invocation
    request: Any
    background: bool

    def run(self, pools: Pools) -> None:
        """Submit it to its pool (called on the ack path, or on the messenger pool after a role check)."""
        pool = pools.workers if self.background else pools.messengers
        pool.submit(run_in_background, self.handle, self.invocation, self.request)


def run_if_allowed(roles: RoleCheck, permission: Permission, refused: Callable[[str, str, Any, str], None],
                   job: Job, pools: Pools) -> None:
    """A command that needs a role: refused politely (and audited) unless its author has it."""
    invocation, request = job.invocation, job.request
    refusal = roles.refusal_for(invocation.user, permission)
    if refusal is None:
        _continue(job, pools)
        return
    log.info("refused /mesh %s from %s in %s: no %s permission", type(request).__name__, invocation.user,
             invocation.channel, permission)
    _audit(refused, invocation.user, invocation.channel, request, refusal)
    invocation.tell(refusal)


def _press_if_allowed(roles: RoleCheck, permission: Permission, buttons: Buttons, job: Job, action_id: str,
                      pools: Pools) -> None:
    invocation = job.invocation
    refusal = roles.refusal_for(invocation.user, permission)
    if refusal is None:
        _continue(job, pools)
        return
    log.info("refused button %s from %s in %s: no %s permission", action_id, invocation.user, invocation.channel,
             permission)
    _audit(buttons.refused_click, invocation.user, action_id, job.request, refusal)
    invocation.tell(refusal)


def _continue(job: Job, pools: Pools) -> None:
    """After the role check (on the messenger pool): run here, or hand the job to the workers."""
    if job.background:
        job.run(pools)
    else:
        run_in_background(job.handle, job.invocation, job.request)


def _audit(record: Callable[..., None], *args: Any) -> None:
    try:
        record(*args)
    except Exception:  # the refusal stands; the log keeps why it could not be recorded
        log.exception("could not record a refusal in the incident log")


def run_in_background(handler: Handler, invocation: Invocation, request: Any) -> None:
    """A command's or button's work; whatever it raises ends as a private answer, never a traceback."""
    try:
        handler(invocation, request)
    except AskFirst as question:
        question.hold(lambda: run_in_background(handler, invocation, request))
        invocation.show(question.message)
    except MeshbotError as exc:
        log.info("/mesh %s for %s refused: %s", type(request).__name__, invocation.user, exc)
        invocation.tell(user_message(exc))
    except Exception as exc:
        log.exception("/mesh %s for %s failed", type(request).__name__, invocation.user)
        invocation.tell(user_message(exc))
