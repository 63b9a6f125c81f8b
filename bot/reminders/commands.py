"""``/mesh reminders``: the watched certificates, soonest expiry first (an answer only the asker sees)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.reminders import blocks as reminder_blocks
from bot.reminders.service import ReminderService
from bot.slack.app import Invocation
from bot.slack.errors import explaining
from bot.slack.slash import SlashCommands, expect_at_most

REMINDERS_OFF = "Certificate reminders are off on this meshbot (MESHBOT_REMINDERS, MESHBOT_CHANNEL)."


@dataclass(frozen=True)
class RemindersRequest:
    pass


def parse_reminders(words: list[str], rest: str) -> RemindersRequest:
    expect_at_most(words, 0, "reminders")
    return RemindersRequest()


@dataclass(frozen=True)
class ReminderCommands:
    reminders: ReminderService

    def handle(self, who: Invocation, request: RemindersRequest) -> None:
        """Reads the cluster's certificates: registered to run on the worker pool."""
        with explaining("could not read the certificates"):
            result = self.reminders.plan()
        text = reminder_blocks.upcoming_text(result.expiries, self.reminders.timezone, result.now)
        if result.problems:
            text += "\n_Also found: " + "; ".join(result.problems[:3]) + "_"
        who.tell(text[:3900])


def reminders_off(who: Invocation, request: RemindersRequest) -> None:
    who.tell(REMINDERS_OFF)


def register(commands: SlashCommands, reminders: ReminderService | None) -> None:
    """``/mesh reminders``; with reminders off it says so (still on the worker pool, like the real answer)."""
    commands.add("reminders", usage="reminders", summary="certificates by expiry, soonest first",
                 parse=parse_reminders, background=True,
                 handle=ReminderCommands(reminders).handle if reminders is not None else reminders_off)
