"""``/mesh reminders``: the watched certificates, soonest expiry first (an answer only the asker sees)."""

from __future__ import annotations

from bot.reminders import blocks as reminder_blocks
from bot.slack.app import Invocation, Services, handles, run_in_background
from bot.slack.slash import RemindersRequest
from commands.errors import MeshbotError


@handles(RemindersRequest)
def handle_reminders(services: Services, who: Invocation, request: RemindersRequest) -> None:
    if services.reminders is None:
        who.tell("Certificate reminders are off on this meshbot (MESHBOT_REMINDERS, MESHBOT_CHANNEL).")
        return
    services.workers.submit(run_in_background, services, _list, who, request)


def _list(services: Services, who: Invocation, request: RemindersRequest) -> None:
    reminders = services.reminders
    try:
        result = reminders.plan()
    except MeshbotError as exc:
        who.tell(f":warning: could not read the certificates: {exc}")
        return
    text = reminder_blocks.upcoming_text(result.expiries, reminders.timezone, result.now)
    if result.problems:
        text += "\n_Also found: " + "; ".join(result.problems[:3]) + "_"
    who.tell(text[:3900])
