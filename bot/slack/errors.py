"""The one place meshbot's error tree becomes the text the person who asked reads in Slack.

Handlers raise; ``bot.slack.app.run_in_background`` catches and calls
``user_message``.  Our own errors (``MeshbotError`` and below) carry a sentence
meant for a person; anything else is a bug, so the user gets a short apology
and the log gets the traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bot.slack.client import SlackError, SlackErrorKind
from bot.slack.slash import UnknownSubcommand, UsageError
from bot.storage.database import DatabaseUnavailable
from commands.errors import MeshbotError

INTERNAL_ERROR = ":x: meshbot hit an internal error; the details are in its log."


class Failed(MeshbotError):
    """What could not be done, and why: ``cannot plan `/mesh restart istiod`: <the cause>``."""

    def __init__(self, what: str, cause: MeshbotError):
        self.what = what
        self.cause = cause
        super().__init__(f"{what}: {cause}")


@contextlib.contextmanager
def explaining(what: str) -> Iterator[None]:
    """Our errors raised inside say what could not be done (``what``) before why."""
    try:
        yield
    except Failed:
        raise
    except MeshbotError as exc:
        raise Failed(what, exc) from exc


def user_message(error: BaseException) -> str:
    """The ephemeral answer for a failed command or button."""
    cause = error.cause if isinstance(error, Failed) else error
    if isinstance(cause, SlackError):
        return slack_problem(cause)
    if isinstance(cause, DatabaseUnavailable):
        # A click or command during a database outage or restart: nothing of it was kept, and saying so is the
        # only way the person knows to press again (the button still works once the database is back).
        return (":warning: Not recorded: meshbot's database is unreachable right now, so nothing changed. "
                "Click again (or repeat the command) in a moment.")
    if isinstance(error, MeshbotError):
        return f":warning: {error}"
    return INTERNAL_ERROR


def slack_problem(error: SlackError) -> str:
    if error.kind == SlackErrorKind.NOT_IN_CHANNEL:
        return ("meshbot is not a member of this channel, so it cannot post the results here. "
                "Invite it with `/invite @meshbot` and try again.")
    return f"meshbot could not post to Slack ({error.error}), so it did nothing."


def usage_answer(error: UsageError, help_text: str) -> str:
    """Wrong ``/mesh`` text: what is wrong, then the list of subcommands — except for a mistyped sub-command,
    whose answer is the closest names (thirteen help lines hide the one "did you mean")."""
    if isinstance(error, UnknownSubcommand):
        return f":warning: {error}"
    return f":warning: {error}\n\n{help_text}"
