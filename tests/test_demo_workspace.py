"""The demo's embedded Slack: what it forwards is signed as Slack signs it; what it keeps is what Slack shows."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from slack_sdk.signature import SignatureVerifier

from bot.demo import render
from bot.demo.signing import signed_headers
from bot.demo.workspace import BOT_USER, CHANNEL, Workspace
from tests.support.http_server import start_server

SECRET = "demo-signing-secret-for-tests"
TOKEN = "xoxb-demo-test-token"


@pytest.fixture
def bot():
    """A stand-in for the bot's /slack/events that records what arrives and acks with 200."""
    state, server = start_server()
    state.answer("/slack/events", b"")
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def workspace(bot):
    space = Workspace(bot_token=TOKEN, signing_secret=SECRET, base_url="http://127.0.0.1:9")
    space.bot_url = bot.url
    return space


def _verifies(secret: str, request) -> bool:
    headers = {k.lower(): v for k, v in request.headers.items()}
    return SignatureVerifier(secret).is_valid(request.body, headers["x-slack-request-timestamp"],
                                              headers["x-slack-signature"])


def test_forwarded_slash_command_verifies_with_slack_sdks_signature_verifier(workspace, bot):
    workspace.slash_command("UALICE", "diagnose all prod")

    (request,) = bot.requests
    assert request.path == "/slack/events"
    assert _verifies(SECRET, request)
    form = dict(urllib.parse.parse_qsl(request.body.decode()))
    assert (form["command"], form["text"], form["user_id"], form["channel_id"]) == (
        "/mesh", "diagnose all prod", "UALICE", CHANNEL)
    assert form["response_url"].startswith("http://127.0.0.1:9/response/")


def test_forwarded_request_does_not_verify_under_another_secret(workspace, bot):
    workspace.slash_command("UALICE", "help")
    assert not _verifies("some-other-secret", bot.requests[0])


def test_signature_is_slacks_documented_example():
    # api.slack.com/authentication/verifying-requests-from-slack, "Validating a request" walkthrough
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
            b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
            b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
            b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    headers = signed_headers("8f742231b10e8888abcd99yyyzzz85a5", body, timestamp=1531420618)
    assert headers["X-Slack-Signature"] == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_button_click_is_a_signed_block_actions_payload_for_the_clicked_message(workspace, bot):
    message = workspace.post(user=BOT_USER, text="Request #1", blocks=[])

    workspace.click("UBOB", message.ts, {"action_id": "approval_approve", "block_id": "approval-1", "value": "1"})

    (request,) = bot.requests
    assert _verifies(SECRET, request)
    payload = json.loads(dict(urllib.parse.parse_qsl(request.body.decode()))["payload"])
    assert payload["type"] == "block_actions" and payload["user"]["id"] == "UBOB"
    assert payload["container"]["message_ts"] == message.ts
    assert payload["actions"][0]["value"] == "1"


def test_ephemeral_answer_through_response_url_is_seen_only_by_who_asked(workspace, bot):
    workspace.slash_command("UALICE", "permissive-mtls prod")
    form = dict(urllib.parse.parse_qsl(bot.requests[0].body.decode()))
    token = form["response_url"].rsplit("/", 1)[1]

    assert workspace.respond(token, {"text": "Request #1 is in the thread", "response_type": "ephemeral"})

    assert any("Request #1" in m.text for m in workspace.visible_to("UALICE"))
    assert not any("Request #1" in m.text for m in workspace.visible_to("UBOB"))
    assert not workspace.respond("not-a-token", {"text": "x"})


def test_web_api_refuses_a_wrong_token_and_keeps_threads_and_edits(workspace):
    assert workspace.api("chat.postMessage", {"channel": CHANNEL, "text": "x"}, "Bearer xoxb-wrong") == {
        "ok": False, "error": "invalid_auth"}
    top = workspace.api("chat.postMessage", {"channel": CHANNEL, "text": "incident"}, f"Bearer {TOKEN}")
    reply = workspace.api("chat.postMessage", {"channel": CHANNEL, "text": "findings", "thread_ts": top["ts"]},
                          f"Bearer {TOKEN}")
    edited = workspace.api("chat.update", {"channel": CHANNEL, "ts": top["ts"], "text": "incident (resolved)"},
                           f"Bearer {TOKEN}")

    assert reply["ok"] and edited["ok"]
    assert workspace.find(reply["ts"]).thread_ts == top["ts"]
    assert workspace.find(top["ts"]).text == "incident (resolved)" and workspace.find(top["ts"]).edited
    assert workspace.api("chat.postMessage", {"channel": CHANNEL, "text": "", "blocks": []}, f"Bearer {TOKEN}")[
        "error"] == "no_text"


def test_uploaded_file_is_attached_to_its_thread(workspace):
    auth = f"Bearer {TOKEN}"
    top = workspace.api("chat.postMessage", {"channel": CHANNEL, "text": "incident"}, auth)
    upload = workspace.api("files.getUploadURLExternal", {"filename": "findings.txt", "length": "5"}, auth)
    assert workspace.upload(upload["file_id"], b"hello")
    done = workspace.api("files.completeUploadExternal", {
        "files": json.dumps([{"id": upload["file_id"], "title": "All findings"}]), "channel_id": CHANNEL,
        "thread_ts": top["ts"]}, auth)

    assert done["ok"]
    attached = workspace.file(upload["file_id"])
    assert (attached.title, attached.content) == ("All findings", "hello")


def test_message_text_and_button_values_cannot_inject_html():
    html = render.mrkdwn("&lt;script&gt;alert(1)&lt;/script&gt; <javascript:alert(1)|click> *bold*")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "href" not in html and "<b>bold</b>" in html
    button = render.block({"type": "actions", "elements": [{
        "type": "button", "action_id": "x", "value": '"><img src=x onerror=alert(1)>',
        "text": {"type": "plain_text", "text": "<b>Approve</b>"}}]}, {"ts": "1.1"})
    assert "<img" not in button and "<b>Approve" not in button


def test_links_and_mentions_render_as_slack_shows_them():
    html = render.mrkdwn("see <https://istio.io/latest/docs/|the docs>, ask <@UBOB>", {"UBOB": "bob"}.get)
    assert '<a href="https://istio.io/latest/docs/"' in html and ">the docs</a>" in html
    assert "@bob" in html
