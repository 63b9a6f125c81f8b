"""``/mesh timeline [NAMESPACE] [--since 30m]``: when it started, who is failing whom, what changed just before.

Runs on the worker pool (it reads Prometheus and the cluster): a top message at once, then the short timeline,
the full text and the error-ratio graph in its thread through the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bot.slack.app import Invocation
from bot.slack.blocks import context, escape, message_of, section
from bot.slack.client import SlackClient
from bot.slack.errors import explaining
from bot.slack.outbox import Outbox
from bot.slack.slash import SlashCommands, UsageError, namespace_argument
from bot.timeline import thread
from bot.timeline.blocks import top_lines
from bot.timeline.reader import DEFAULT_SINCE, TimelineReader
from bot.timeline.summary import TimelineSummary
from commands.times import human_duration

USAGE = "timeline [NAMESPACE] [--since 30m]"
MAX_SINCE = timedelta(hours=24)
"""meshbot asks Prometheus for at most a day per range (docs/timeline.md, "every question is bounded")."""
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class TimelineRequest:
    namespace: str | None = None
    since: timedelta = DEFAULT_SINCE


def parse_since(value: str) -> timedelta:
    """``90s``, ``30m``, ``2h``: a window up to a day."""
    number, unit = value[:-1], value[-1:].lower()
    if unit not in UNITS or not number.isdigit() or int(number) == 0:
        raise UsageError(f"`{escape(value[:20])}` is not a duration (e.g. 30m, 2h). Usage: `/mesh {USAGE}`")
    since = timedelta(seconds=int(number) * UNITS[unit])
    if since > MAX_SINCE:
        raise UsageError(f"--since is at most 24h (Prometheus is asked for at most a day). Usage: `/mesh {USAGE}`")
    return since


def parse_timeline(words: list[str], rest: str) -> TimelineRequest:
    namespace, since = None, DEFAULT_SINCE
    remaining = list(words)
    while remaining:
        word = remaining.pop(0)
        if word.startswith("--since="):
            since = parse_since(word.removeprefix("--since="))
        elif word == "--since":
            if not remaining:
                raise UsageError(f"--since needs a duration (e.g. 30m). Usage: `/mesh {USAGE}`")
            since = parse_since(remaining.pop(0))
        elif word.startswith("-") or namespace is not None:
            raise UsageError(f"unexpected `{escape(word[:40])}`. Usage: `/mesh {USAGE}`")
        else:
            namespace = namespace_argument(word)
    return TimelineRequest(namespace, since)


@dataclass(frozen=True)
class TimelineCommands:
    reader: TimelineReader
    slack: SlackClient
    outbox: Outbox

    def handle(self, who: Invocation, request: TimelineRequest) -> None:
        where = f"`{request.namespace}`" if request.namespace else "all namespaces"
        title = f"Timeline \u00b7 {request.namespace or 'all namespaces'} \u00b7 last {human_duration(request.since)}"
        started = message_of(f"{title} (asked by <@{who.user}>)", [section(
            f":hourglass_flowing_sand: Reading the timeline of {where} for the last {human_duration(request.since)} "
            f"(asked by <@{who.user}>)\u2026")])
        top = self.slack.post_message(who.channel, started.text, started.blocks)  # SlackError: the user is told
        with explaining("could not read the timeline"):
            timeline = self.reader.read(at=self.reader.now(), since=request.since,
                                        namespaces=[request.namespace] if request.namespace else [])
        post = thread.prepare(timeline, title=title, source=self.reader.source,
                              basename=f"meshbot-timeline-{request.namespace or 'all'}")
        summary = TimelineSummary.of(timeline)
        lines = top_lines(summary) or [":white_check_mark: No failing edge and no onset in the window."]
        done = message_of(f"{title}: " + post.message.text.split(": ", 1)[-1],
                          [section(f"*{escape(title)}*\n" + "\n".join(lines)),
                           context(f"Asked by <@{who.user}> \u00b7 details in the thread")])
        with self.outbox.database.transaction() as db:
            running = self.outbox.adopt(db, channel=who.channel, ts=top.ts)
            thread.queue(db, self.outbox, post, incident_id=None, channel=who.channel, thread_of=running)
            self.outbox.update(db, incident_id=None, channel=who.channel, message=done, of=running)
        self.outbox.wake()


def register(commands: SlashCommands, reader: TimelineReader, *, slack: SlackClient, outbox: Outbox) -> None:
    commands.add("timeline", usage=USAGE, summary="when it started, which calls fail and what changed just before "
                                                  "(Prometheus, Events, managedFields), with a graph",
                 parse=parse_timeline, handle=TimelineCommands(reader, slack, outbox).handle, background=True)
