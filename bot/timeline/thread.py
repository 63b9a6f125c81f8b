"""A timeline in a thread: the short reply, the full text as a file and the error-ratio graph as an image,
prepared outside the database transaction (drawing takes a moment, in a process of its own: ``bot.timeline.drawing``)
and queued through the outbox inside it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlite_utils

from bot.slack.blocks import Message
from bot.slack.outbox import Outbox
from bot.timeline import drawing
from bot.timeline.blocks import graph_alt_text, timeline_message
from commands.errors import UserError
from commands.telemetry.timeline import Timeline, timeline_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimelinePost:
    basename: str
    """``incident-7-timeline``: the files' names without extension."""
    title: str
    message: Message
    text: str
    png: bytes | None
    alt_text: str


def prepare(timeline: Timeline, *, title: str, basename: str, source: str, timing: str | None = None) -> TimelinePost:
    """Everything the thread gets; the graph only when there is an edge to draw and matplotlib is installed."""
    png = None
    if timeline.telemetry.edges:
        try:
            png = drawing.shared().error_ratio_png(timeline.telemetry.edges, timeline.changes, timeline.onset)
        except UserError as exc:  # no `graphs` extra, or the drawing process failed: the words still go out
            log.info("no timeline graph: %s", exc)
    return TimelinePost(basename=basename, title=title,
                        message=timeline_message(timeline, title, source=source, timing=timing, graph=png is not None),
                        text=timeline_text(timeline, source=source), png=png, alt_text=graph_alt_text(timeline))


def queue(db: sqlite_utils.Database, outbox: Outbox, post: TimelinePost, *, incident_id: int | None, channel: str,
          thread_of: int) -> None:
    """The reply, then the full text, then the graph, in that order in the thread (one outbox lane)."""
    outbox.post(db, incident_id=incident_id, channel=channel, message=post.message, thread_of=thread_of)
    outbox.upload(db, incident_id=incident_id, channel=channel, thread_of=thread_of,
                  filename=f"{post.basename}.txt", title=f"Full timeline: {post.title}", content=post.text)
    if post.png is not None:
        outbox.upload_image(db, incident_id=incident_id, channel=channel, thread_of=thread_of,
                            filename=f"{post.basename}.png", title=f"Error ratio: {post.title}", image=post.png,
                            alt_text=post.alt_text)
