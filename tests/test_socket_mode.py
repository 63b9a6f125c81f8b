"""Socket Mode end to end over real sockets: envelopes in over a WebSocket, acks back on it, posts to the Web API."""

from __future__ import annotations

import threading
import time
import urllib.parse

import pytest

from tests.support.bot import quiesce, threads_left
from tests.support.slack import FakeSlack, post_signed, slash_command_body
from tests.support.socket_mode import FakeSocketMode

APP_TOKEN = "xapp-1-A0-0-test"


def slash_command_payload(fake_slack: FakeSlack, text: str) -> dict[str, str]:
    """The fields of a slash command, which Socket Mode delivers as a JSON object instead of a form."""
    body = slash_command_body(text, response_url=fake_slack.response_url())
    return dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))


def posts(fake_slack: FakeSlack) -> list:
    """Calls that would show something in Slack (connecting and Bolt's auth.test do not)."""
    return [c for c in fake_slack.calls if c.method not in ("apps.connections.open", "auth.test")] + \
        fake_slack.responses


@pytest.fixture
def socket_meshbot(fake_socket_mode: FakeSocketMode, bot_factory):
    """A bot connected in Socket Mode (the fake endpoint outlives it, so it never reconnects at teardown)."""
    meshbot = bot_factory(slack_app_token=APP_TOKEN)
    fake_socket_mode.wait_for_connection()
    return meshbot


def test_connects_with_the_app_level_token_to_the_url_apps_connections_open_issued(
        socket_meshbot, fake_slack, fake_socket_mode):
    [opened] = fake_slack.of("apps.connections.open")
    assert opened.headers["Authorization"] == f"Bearer {APP_TOKEN}"
    assert opened.args["_ok"] is True
    [connection] = fake_socket_mode.connections
    assert connection.ticket and fake_socket_mode.rejected_tickets == []


def test_status_is_acked_on_the_socket_then_posted_with_findings_in_the_thread_and_updated(
        socket_meshbot, fake_slack, fake_socket_mode):
    started = time.monotonic()
    envelope_id = fake_socket_mode.push("slash_commands", slash_command_payload(fake_slack, "status prod"))

    ack = fake_socket_mode.wait_for_ack(envelope_id, timeout=3)
    assert time.monotonic() - started < 3
    assert ack == {"envelope_id": envelope_id}

    update = fake_slack.wait_for(lambda: [c.args for c in fake_slack.of("chat.update") if c.args.get("_ok")],
                                 what="the top-level message update")[-1]
    [top] = fake_slack.messages(top_level=True)
    assert top["channel"] == "CINCIDENT"
    assert top["text"] == "Running status for prod, requested by <@UALICE>"
    [thread] = fake_slack.messages(thread_ts=top["_ts"])
    assert thread["blocks"][0]["text"]["text"] == "status \u00b7 prod"
    assert "MB1011" in str(thread["blocks"])
    assert update["ts"] == top["_ts"]
    assert update["text"].startswith("status for prod: ")


def test_unknown_subcommand_is_acked_with_an_ephemeral_usage_text_and_nothing_is_posted(
        socket_meshbot, fake_slack, fake_socket_mode):
    envelope_id = fake_socket_mode.push("slash_commands", slash_command_payload(fake_slack, "frobnicate"))

    ack = fake_socket_mode.wait_for_ack(envelope_id, timeout=3)
    assert ack["envelope_id"] == envelope_id
    assert ack["payload"]["response_type"] == "ephemeral"
    assert "unknown subcommand `frobnicate`" in ack["payload"]["text"]
    assert "`/mesh help` lists them all" in ack["payload"]["text"]  # short: not the whole help (issue 27)
    quiesce(socket_meshbot)
    assert posts(fake_slack) == []


def test_stop_drops_the_connection_at_once_without_reconnecting_or_leaving_threads(
        fake_socket_mode, bot_factory, fake_slack):
    before = set(threading.enumerate())
    meshbot = bot_factory(slack_app_token=APP_TOKEN)
    fake_socket_mode.wait_for_ack(fake_socket_mode.push("slash_commands", slash_command_payload(fake_slack, "help")))

    # Having delivered the envelope, the client's reader is back in a 3 s recv(): stop must not wait it out.
    started = time.monotonic()
    meshbot.stop(timeout=5)
    assert time.monotonic() - started < 2.5

    [connection] = fake_socket_mode.wait_until_disconnected(timeout=1)
    assert connection.closed_at - started < 0.5
    # slack_sdk's builtin client closes TCP without a Close frame; Slack's end sees 1006 and lets go.
    assert connection.close_code == 1006
    # The bot is stopped, so there is no pool to drain: this gives slack_sdk's own reconnect thread time to
    # (wrongly) open a second connection, which nothing else would signal.
    time.sleep(0.3)
    assert len(fake_slack.of("apps.connections.open")) == 1
    assert len(fake_socket_mode.connections) == 1
    # waitress's worker threads outlive server.close() (HTTP, not Socket Mode): not this test's subject.
    assert threads_left(before, ignore="waitress-") == []


def test_without_a_signing_secret_http_events_are_refused_even_signed_with_the_placeholder(
        fake_socket_mode, bot_factory, fake_slack):
    meshbot = bot_factory(slack_app_token=APP_TOKEN, slack_signing_secret=None)
    fake_socket_mode.wait_for_connection()

    body = slash_command_body("status prod", response_url=fake_slack.response_url())
    response = post_signed(f"{meshbot.url}/slack/events", body, secret="unused-in-socket-mode")

    assert response.status_code == 404
    envelope_id = fake_socket_mode.push("slash_commands", slash_command_payload(fake_slack, "help"))
    assert "/mesh status [NAMESPACE]" in fake_socket_mode.wait_for_ack(envelope_id)["payload"]["text"]
    quiesce(meshbot)
    assert posts(fake_slack) == []


def test_an_envelope_delivered_again_with_the_same_envelope_id_runs_once(
        fake_socket_mode, bot_factory, fake_slack, kube, tmp_path):
    from tests.support.kube import write_kubeconfig
    from tests.test_actions import namespace

    kube.add(namespace("payments"))
    meshbot = bot_factory(slack_app_token=APP_TOKEN, scenario=None, kube_context="kmock", channel="CINCIDENT",
                          kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", kube.url),
                          approvers=("UBOB", "UCAROL"))
    fake_socket_mode.wait_for_connection()
    payload = slash_command_payload(fake_slack, "permissive-mtls payments")

    envelope_id = fake_socket_mode.push("slash_commands", payload)
    fake_socket_mode.wait_for_ack(envelope_id)
    # Slack did not see that ack in time and delivers the same envelope again.
    fake_socket_mode.push("slash_commands", payload, envelope_id=envelope_id, retry_attempt=1)

    fake_slack.wait_for(lambda: len([m for m in fake_socket_mode.received() if m.get("envelope_id") == envelope_id])
                        == 2, timeout=3, what="the ack of the second delivery")
    fake_slack.wait_for(lambda: [m for m in fake_slack.messages() if "request #1:" in m.get("text", "")],
                        timeout=15, what="request #1 in the thread")
    quiesce(meshbot)  # a second run would have planned, dry-run and posted by the time the bot is idle
    count = meshbot.database.db.execute("SELECT COUNT(*) FROM approval_requests").fetchone()[0]
    assert count == 1
    assert [m for m in fake_slack.messages() if "request #2" in m.get("text", "")] == []
    assert 'meshbot_slack_duplicates_total{transport="socket_mode"} 1.0' in meshbot.services.metrics.exposition().decode()
