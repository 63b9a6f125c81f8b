"""``/mesh timeline [NAMESPACE] [--since 30m]``: parsing (pure), and the answer in a thread over real HTTP on the
bundled outage's captured answers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.slack.slash import UsageError
from bot.timeline.commands import TimelineRequest, parse_timeline
from tests.support.bot import quiesce
from tests.support.slack import post_signed, slash_command_body


@pytest.mark.parametrize(("text", "request_"), [
    ("", TimelineRequest(None, timedelta(minutes=30))),
    ("prod", TimelineRequest("prod", timedelta(minutes=30))),
    ("prod --since 2h", TimelineRequest("prod", timedelta(hours=2))),
    ("--since=90s prod", TimelineRequest("prod", timedelta(seconds=90))),
])
def test_the_namespace_and_window_are_read_in_any_order(text, request_):
    assert parse_timeline(text.split(), text) == request_


@pytest.mark.parametrize(("text", "said"), [
    ("prod --since", "--since needs a duration"),
    ("prod --since soon", "`soon` is not a duration"),
    ("prod --since 2d", "--since is at most 24h"),
    ("prod shop", "unexpected `shop`"),
    ("Prod_1", "Prod_1"),
    ("prod --follow", "unexpected `--follow`"),
])
def test_a_wrong_line_is_refused_with_what_to_type(text, said):
    with pytest.raises(UsageError) as refused:
        parse_timeline(text.split(), text)

    assert said in str(refused.value)


def test_the_timeline_of_a_namespace_is_answered_in_a_thread_with_the_graph(meshbot, fake_slack):
    body = slash_command_body("timeline prod --since 45m", response_url=fake_slack.response_url())

    assert post_signed(f"{meshbot.url}/slack/events", body).status_code == 200

    fake_slack.wait_for(lambda: len(fake_slack.files) == 2 or None, timeout=30, what="the timeline's files")
    quiesce(meshbot)
    [top] = fake_slack.messages(top_level=True)
    assert "Reading the timeline of `prod` for the last 45 minutes" in str(top["blocks"])
    [reply] = fake_slack.messages(thread_ts=top["_ts"])
    assert reply["text"].startswith("Timeline \u00b7 prod \u00b7 last 45 minutes: errors began at 02:41 UTC")
    [done] = [c.args for c in fake_slack.of("chat.update") if c.args.get("_ok")]
    assert "*Started:*" in str(done["blocks"]) and "*Last change before it:* VirtualService prod/payment-routes" in \
        str(done["blocks"])
    assert {f.filename for f in fake_slack.files.values()} == {"meshbot-timeline-prod.txt",
                                                              "meshbot-timeline-prod.png"}
    assert all(f.thread_ts == top["_ts"] for f in fake_slack.files.values())
