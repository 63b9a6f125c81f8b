"""Pictures in threads through Slack's current upload flow, against a fake that refuses what Slack refuses.

files.getUploadURLExternal (filename, length, alt_txt) -> POST the bytes to the upload URL ->
files.completeUploadExternal (files, channel_id, thread_ts): https://docs.slack.dev/messaging/working-with-files
"""

from __future__ import annotations

import httpx
import pytest

from bot.slack.blocks import Message
from bot.slack.client import SlackClient, SlackError, build_web_client
from bot.slack.outbox import Outbox
from tests.support.slack import BOT_TOKEN, FakeSlack

CHANNEL = "CINCIDENT"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def _client(fake_slack: FakeSlack) -> SlackClient:
    return SlackClient(build_web_client(BOT_TOKEN, fake_slack.api_url, max_retries=0))


def _call(fake_slack: FakeSlack, method: str, **data) -> dict:
    return httpx.post(f"{fake_slack.api_url}{method}", data=data,
                      headers={"Authorization": f"Bearer {BOT_TOKEN}"}).json()


def test_an_image_lands_in_the_thread_with_its_bytes_title_and_alt_text(fake_slack):
    file_id = _client(fake_slack).upload_image(CHANNEL, "1733550000.000100", filename="timeline.png",
                                               title="Error ratio", content=PNG, alt_text="403s from 09:48")

    shared = fake_slack.files[file_id]
    assert (shared.content, shared.channel, shared.thread_ts) == (PNG, CHANNEL, "1733550000.000100")
    assert (shared.title, shared.alt_txt, shared.snippet_type) == ("Error ratio", "403s from 09:48", None)
    [url_call] = fake_slack.of("files.getUploadURLExternal")
    assert url_call.args["length"] == str(len(PNG))


def test_the_upload_url_is_on_the_fakes_own_port_and_takes_exactly_the_declared_length(fake_slack):
    answer = _call(fake_slack, "files.getUploadURLExternal", filename="a.png", length="10")
    assert answer["upload_url"].startswith(fake_slack.url + "/upload/")

    assert httpx.post(answer["upload_url"], content=b"x" * 11).status_code == 400
    assert httpx.post(answer["upload_url"], content=b"x" * 10).status_code == 200
    assert httpx.post(answer["upload_url"], content=b"x" * 10).status_code == 404  # one upload per URL
    assert httpx.post(fake_slack.url + "/upload/F-never-issued", content=b"x").status_code == 404


@pytest.mark.parametrize(("data", "error"), [
    ({"length": "10"}, "invalid_arguments"),
    ({"filename": "a.png"}, "invalid_arguments"),
    ({"filename": "a.png", "length": "0"}, "missing_argument"),
    ({"filename": "a.png", "length": "10", "alt_txt": "x" * 1001}, "alt_txt_too_large"),
    ({"filename": "a.txt", "length": str(2 * 1024 * 1024), "snippet_type": "text"}, "snippet_too_large"),
])
def test_asking_for_an_upload_url_without_what_slack_requires_is_refused(fake_slack, data, error):
    assert _call(fake_slack, "files.getUploadURLExternal", **data) == {"ok": False, "error": error}


def test_completing_needs_uploaded_files_a_channel_for_a_thread_and_happens_once(fake_slack):
    answer = _call(fake_slack, "files.getUploadURLExternal", filename="a.png", length="3")
    files = f'[{{"id": "{answer["file_id"]}"}}]'
    assert _call(fake_slack, "files.completeUploadExternal", files=files)["error"] == "file_not_found"
    httpx.post(answer["upload_url"], content=b"abc")

    assert _call(fake_slack, "files.completeUploadExternal")["error"] == "invalid_arguments"
    assert _call(fake_slack, "files.completeUploadExternal", files=files,
                 thread_ts="1.2")["error"] == "invalid_arguments"
    assert _call(fake_slack, "files.completeUploadExternal", files=files, channel_id=CHANNEL, thread_ts="1.2")["ok"]
    assert _call(fake_slack, "files.completeUploadExternal", files=files,
                 channel_id=CHANNEL)["error"] == "file_not_found"


def test_a_workspace_that_restricts_large_uploads_refuses_the_image_as_a_slack_error(fake_slack):
    fake_slack.max_upload_bytes = 1000

    with pytest.raises(SlackError) as refused:
        _client(fake_slack).upload_image(CHANNEL, None, filename="t.png", title="t", content=PNG, alt_text="t")

    assert refused.value.error == "file_upload_size_restricted"
    assert fake_slack.files == {}


def test_the_outbox_delivers_a_recorded_image_into_its_thread_after_the_message(fake_slack, backend_database):
    database = backend_database
    outbox = Outbox(database, _client(fake_slack))
    with database.transaction() as db:
        top = outbox.post(db, incident_id=None, channel=CHANNEL, message=Message("top", []))
        outbox.upload_image(db, incident_id=None, channel=CHANNEL, thread_of=top, filename="timeline.png",
                            title="Error ratio", image=PNG, alt_text="403s began at 09:48")
    while outbox.deliver_due() is not None:
        pass

    [shared] = fake_slack.files.values()
    assert shared.content == PNG
    assert shared.thread_ts == fake_slack.messages(top_level=True)[0]["_ts"]


def test_a_text_report_over_a_snippets_1_mb_goes_as_a_plain_file_and_a_small_one_as_a_snippet(fake_slack):
    client = _client(fake_slack)
    big = client.upload_text(CHANNEL, None, filename="all.txt", title="All", content="x" * (1024 * 1024 + 1))
    small = client.upload_text(CHANNEL, None, filename="few.txt", title="Few", content="x" * 10)

    assert fake_slack.files[big].snippet_type is None
    assert fake_slack.files[small].snippet_type == "text"
