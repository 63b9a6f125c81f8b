"""The Bolt app: acks ``/mesh`` and button presses, and runs what the features registered.

Slack wants an answer within 3 seconds.  Every listener therefore acks at once,
in the request thread, after pure checks only (parsing, channel allowlist), and
hands the rest to the messenger pool, which first checks the author's role when
the request needs one (``bot.slack.roles``: group membership may ask Slack).
(Bolt's lazy listeners would do the same
but deep-copy every request and share their executor with the acks; under load
acks then queue behind diagnoses.)

What a request or a button does is in ``Handlers``, filled by each feature's
``register`` function from ``bot.server.wiring``; this module knows no feature.
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
from bot.slack.errors import user_message, usage_answer
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

    def tell(self, text: str) -> None:
        """An ephemeral answer through the command's response_url (works even before the bot is invited)."""
        try:
            self.respond(text=text, response_type="ephemeral", replace_original=False)
        except Exception:  # the user's private answer is best effort; the log keeps the reason
            log.warning("could not send an ephemeral answer to %s in %s", self.user, self.channel, exc_info=True)


Handler = Callable[[Invocation, Any], None]
"""(who asked, the parsed request or the button's value): runs on the messenger pool; raises for the user to read."""
RefusedClick = Callable[[str, str, str, str], None]
"""(user, button, value, reason): audits a press refused before any handler ran."""
RefusedCommand = Callable[[str, str, Any, str], None]
"""(user, channel, the parsed request, reason): audits a ``/mesh`` command its author may not run."""


class Handlers:
    """What each ``/mesh`` request type and each button does; features add theirs in ``register``."""

    def __init__(self) -> None:
        self._requests: dict[type, Handler] = {}
        self._buttons: dict[str, Handler] = {}
        self._refused_click_audits: list[RefusedClick] = []
        self._refused_command_audits: list[RefusedCommand] = []
        self._request_permissions: dict[type, list[tuple[Permission, Callable[[Any], bool]]]] = {}
        self._button_permissions: dict[str, Permission] = {}

    def on_request(self, request_type: type, handler: Handler) -> None:
        if request_type in self._requests:
            raise ValueError(f"{request_type.__name__} has a handler already")
        self._requests[request_type] = handler

    def on_button(self, action_id: str, handler: Handler) -> None:
        """``action_id`` is the part before any ``:suffix`` (buttons in one message need distinct IDs)."""
        if action_id in self._buttons:
            raise ValueError(f"button {action_id} has a handler already")
        self._buttons[action_id] = handler

    def audit_refused_clicks(self, audit: RefusedClick) -> None:
        self._refused_click_audits.append(audit)

    def audit_refused_commands(self, audit: RefusedCommand) -> None:
        self._refused_command_audits.append(audit)

    def require(self, request_type: type, permission: Permission,
                when: Callable[[Any], bool] = lambda request: True) -> None:
        """Requests of this type (those ``when`` selects) need ``permission``; any other needs DIAGNOSE."""
        self._request_permissions.setdefault(request_type, []).append((permission, when))

    def require_for_button(self, action_id: str, permission: Permission) -> None:
        """Presses of this button need ``permission``; other buttons are judged by their handler (votes)."""
        self._button_permissions[action_id] = permission

    def permission_for(self, request: Any) -> Permission:
        for permission, applies in self._request_permissions.get(type(request), ()):
            if applies(request):
                return permission
        return Permission.DIAGNOSE

    def permission_for_button(self, action_id: str) -> Permission | None:
        return self._button_permissions.get(action_id)

    def for_request(self, request: Any) -> Handler | None:
        return self._requests.get(type(request))

    def for_button(self, action_id: str) -> Handler | None:
        return self._buttons.get(action_id)

    def button_ids(self) -> tuple[str, ...]:
        return tuple(self._buttons)

    def refused_click(self, user: str, button: str, value: str, reason: str) -> None:
        for audit in self._refused_click_audits:
            audit(user, button, value, reason)

    def refused_command(self, user: str, channel: str, request: Any, reason: str) -> None:
        for audit in self._refused_command_audits:
            audit(user, channel, request, reason)


def channel_refusal(settings: Settings, channel: str) -> str | None:
    """The polite refusal for a channel outside MESHBOT_ALLOWED_CHANNELS, or None when allowed."""
    allowed = settings.allowed_channels
    if not allowed or channel in allowed:
        return None
    where = ", ".join(f"<#{c}>" for c in allowed)
    return f"Sorry, meshbot only answers in {where}. Please ask there."


def build_bolt_app(settings: Settings, web_client: WebClient, executor: ThreadPoolExecutor,
                   commands: SlashCommands, handlers: Handlers, roles: RoleCheck) -> App:
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
            request = commands.parse(command.get("text", ""))
        except UsageError as exc:
            ack(text=usage_answer(exc, commands.help_text()), response_type="ephemeral")
            return
        handler = handlers.for_request(request)
        if isinstance(request, HelpRequest) or handler is None:
            ack(text=commands.help_text(), response_type="ephemeral")
            return
        ack()
        invocation = Invocation(user=command["user_id"], channel=command["channel_id"], respond=respond)
        permission = handlers.permission_for(request)
        if roles.needs_check(permission):
            # Group membership may need Slack (usergroups.users.list): not on the ack path.
            executor.submit(run_if_allowed, roles, permission, handlers, handler, invocation, request)
        else:
            executor.submit(run_in_background, handler, invocation, request)

    def block_action(ack: Ack, body: dict, action: dict, respond: Respond) -> None:
        ack()
        invocation = Invocation(user=(body.get("user") or {}).get("id", ""),
                                channel=(body.get("channel") or {}).get("id", ""), respond=respond)
        button = str(action.get("action_id", "")).split(":", 1)[0]
        value = str(action.get("value") or "")
        refusal = channel_refusal(settings, invocation.channel)
        if refusal:
            executor.submit(invocation.tell, refusal)
            executor.submit(handlers.refused_click, invocation.user, button, value, refusal)
            return
        handler = handlers.for_button(button)
        if handler is None:
            return
        permission = handlers.permission_for_button(button)
        if permission is not None and roles.needs_check(permission):
            executor.submit(_press_if_allowed, roles, permission, handlers, handler, invocation, button, value)
        else:
            executor.submit(run_in_background, handler, invocation, value)

    app.command("/mesh")(mesh_command)
    if handlers.button_ids():
        names = "|".join(re.escape(name) for name in sorted(handlers.button_ids()))
        app.action(re.compile(rf"^({names})(:\d+)?$"))(block_action)
    return app


def run_if_allowed(roles: RoleCheck, permission: Permission, handlers: Handlers, handler: Handler,
                   invocation: Invocation, request: Any) -> None:
    """A command that needs a role: refused politely (and audited) unless its author has it."""
    refusal = roles.refusal_for(invocation.user, permission)
    if refusal is None:
        run_in_background(handler, invocation, request)
        return
    log.info("refused /mesh %s from %s in %s: no %s permission", type(request).__name__, invocation.user,
             invocation.channel, permission)
    _audit(handlers.refused_command, invocation.user, invocation.channel, request, refusal)
    invocation.tell(refusal)


def _press_if_allowed(roles: RoleCheck, permission: Permission, handlers: Handlers, handler: Handler,
                      invocation: Invocation, button: str, value: str) -> None:
    refusal = roles.refusal_for(invocation.user, permission)
    if refusal is None:
        run_in_background(handler, invocation, value)
        return
    log.info("refused button %s from %s in %s: no %s permission", button, invocation.user, invocation.channel,
             permission)
    _audit(handlers.refused_click, invocation.user, button, value, refusal)
    invocation.tell(refusal)


def _audit(record: Callable[..., None], *args: Any) -> None:
    try:
        record(*args)
    except Exception:  # the refusal stands; the log keeps why it could not be recorded
        log.exception("could not record a refusal in the incident log")


def run_in_background(handler: Handler, invocation: Invocation, request: Any) -> None:
    """A command's or button's work; whatever it raises ends as a private answer, never a traceback."""
    try:
        handler(invocation, request)
    except MeshbotError as exc:
        log.info("/mesh %s for %s refused: %s", type(request).__name__, invocation.user, exc)
        invocation.tell(user_message(exc))
    except Exception as exc:
        log.exception("/mesh %s for %s failed", type(request).__name__, invocation.user)
        invocation.tell(user_message(exc))
