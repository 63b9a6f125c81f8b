""""Attach to #1?" (issue 27): a command about a namespace the open incident does not name is asked about once.

IstiodDown is open about istio-system; ``/mesh status prod`` might be part of that outage or not.  Its author is
asked, with two buttons; the answer is recorded on the incident and holds for that namespace until it
resolves.  Everything goes over real HTTP: Alertmanager's webhook, signed slash commands and button clicks,
and the fake Slack Web API and response URLs.
"""

from __future__ import annotations

import pytest

from bot.incidents.conversation import ATTACH_BUTTON
from tests.support.bot import quiesce
from tests.support.slack import FakeSlack, block_action_body, post_signed, slash_command_body
from tests.test_incidents import TOKEN, istiod_down, send, thread, top_levels, wait_for_diagnostics


@pytest.fixture
def open_outage(bot_factory, fake_slack):
    """The bot with IstiodDown open (about istio-system) and diagnosed in #CINCIDENT; its top message."""
    meshbot = bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT")
    send(meshbot, istiod_down())
    [top] = fake_slack.wait_for(lambda: top_levels(fake_slack), what="the incident message")
    wait_for_diagnostics(fake_slack, top)
    return meshbot, top


def type_command(meshbot, fake_slack: FakeSlack, text: str, answers_to: str) -> None:
    post_signed(f"{meshbot.url}/slack/events", slash_command_body(
        text, user_id="UALICE", response_url=fake_slack.response_url(answers_to)))


def press(meshbot, fake_slack: FakeSlack, label: str, question: dict, answers_to: str) -> None:
    [choice] = [e for b in question["blocks"] if b["type"] == "actions" for e in b["elements"]
                if e["text"]["text"] == label]
    post_signed(f"{meshbot.url}/slack/events", block_action_body(
        choice["action_id"], choice["value"], user_id="UALICE", response_url=fake_slack.response_url(answers_to)))


def answers(fake_slack: FakeSlack, name: str, count: int = 1) -> list[dict]:
    return fake_slack.wait_for(lambda: (found := [r for r in fake_slack.responses if r.get("_to") == name])
                               and len(found) >= count and found, what=f"{count} answer(s) to {name}")


def asked(fake_slack: FakeSlack, name: str) -> dict:
    question = answers(fake_slack, name)[0]
    assert question["text"].startswith("Incident #1 (IstiodDown: istiod is down) is open in this channel about "
                                       "istio-system. Is this command about prod part of it?")
    assert {e["action_id"].split(":")[0] for b in question["blocks"] if b["type"] == "actions"
            for e in b["elements"]} == {ATTACH_BUTTON}
    return question


def status_replies(fake_slack: FakeSlack, top: dict) -> list[dict]:
    return [m for m in thread(fake_slack, top) if m["text"].startswith("status \u00b7 prod")]


def test_attach_answers_in_the_incidents_thread_and_is_not_asked_again_for_that_namespace(open_outage,
                                                                                          fake_slack):
    meshbot, top = open_outage
    type_command(meshbot, fake_slack, "status prod", "first")
    press(meshbot, fake_slack, "Attach to #1", asked(fake_slack, "first"), "click")

    assert answers(fake_slack, "click")[0]["text"] == ("Noted: commands about `prod` attach to incident #1 until "
                                                       "it resolves.")
    # The command itself goes on as typed: its answer goes where its first one went (alice's response URL).
    assert answers(fake_slack, "first", 2)[1]["text"].startswith("Answering in the thread of incident #1")
    fake_slack.wait_for(lambda: status_replies(fake_slack, top), what="the status findings in incident #1's thread")

    type_command(meshbot, fake_slack, "status prod", "again")
    assert answers(fake_slack, "again")[0]["text"].startswith("Answering in the thread of incident #1")
    fake_slack.wait_for(lambda: len(status_replies(fake_slack, top)) == 2, what="the second status in the thread")
    quiesce(meshbot)
    assert len(top_levels(fake_slack)) == 1, "one top-level post for the outage"
    [recorded] = [e for e in meshbot.services.incidents.timeline(1) if e.data.get("scope") == "prod"]
    assert recorded.actor == "UALICE" and recorded.data["attach"] is True


def test_separate_answers_on_its_own_and_is_not_asked_again_for_that_namespace(open_outage, fake_slack):
    meshbot, top = open_outage
    type_command(meshbot, fake_slack, "status prod", "first")
    press(meshbot, fake_slack, "Separate incident", asked(fake_slack, "first"), "click")

    assert answers(fake_slack, "click")[0]["text"] == ("Noted: commands about `prod` open their own thread, not "
                                                       "incident #1's until it resolves.")
    fake_slack.wait_for(lambda: len(top_levels(fake_slack)) == 2, what="the status's own top-level message")
    type_command(meshbot, fake_slack, "status prod", "again")
    fake_slack.wait_for(lambda: len(top_levels(fake_slack)) == 3, what="the second status's own message")
    quiesce(meshbot)
    assert not [r for r in fake_slack.responses if r.get("_to") == "again" and "Is this command" in r["text"]]
    assert status_replies(fake_slack, top) == [], "nothing of it in the incident's thread"


def test_a_command_about_the_incidents_own_namespace_attaches_without_asking(open_outage, fake_slack):
    meshbot, top = open_outage
    type_command(meshbot, fake_slack, "status istio-system", "first")
    assert answers(fake_slack, "first")[0]["text"].startswith("Answering in the thread of incident #1")


@pytest.mark.parametrize("value", ["forged-token:attach", "forged-token:7:prod:attach", "forged-token:1:Prod_1:attach",
                                   "forged-token:1:prod:maybe"])
def test_an_answer_naming_no_open_incident_or_no_namespace_is_refused_politely_and_records_nothing(
        open_outage, fake_slack, value):
    meshbot, _ = open_outage
    post_signed(f"{meshbot.url}/slack/events", block_action_body(
        f"{ATTACH_BUTTON}:1", value, user_id="UALICE", response_url=fake_slack.response_url("x")))
    assert "type the command again" in answers(fake_slack, "x")[0]["text"]
    quiesce(meshbot)
    assert not [e for e in meshbot.services.incidents.timeline(1) if "scope" in e.data]


def test_an_answer_clicked_after_a_restart_is_recorded_and_the_retyped_command_goes_where_it_said(
        bot_factory, open_outage, fake_slack):
    """The question waits in the memory of the replica that asked; Slack may deliver the click to another replica
    (or this one restarted meanwhile). The answer is still recorded, from the button itself."""
    meshbot, top = open_outage
    type_command(meshbot, fake_slack, "status prod", "first")
    question = asked(fake_slack, "first")
    meshbot.stop(timeout=5)
    after = bot_factory(alertmanager_token=TOKEN, channel="CINCIDENT")  # the same database, nothing in memory

    press(after, fake_slack, "Attach to #1", question, "click")

    assert answers(fake_slack, "click")[0]["text"] == (
        "Noted: commands about `prod` attach to incident #1 until it resolves. Type the command again to run it "
        "(the question was asked by another meshbot replica, or before a restart).")
    type_command(after, fake_slack, "status prod", "again")
    assert answers(fake_slack, "again")[0]["text"].startswith("Answering in the thread of incident #1")
    fake_slack.wait_for(lambda: status_replies(fake_slack, top), what="the status findings in incident #1's thread")
