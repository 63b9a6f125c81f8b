"""The demo shows the outage's timeline from its captured answers (no Prometheus, no services): the embedded
Slack accepts the graph through the upload flow and the page shows it as a picture (the whole demo in a real
browser: tests/test_demo_console.py)."""

from __future__ import annotations

import json

from bot.demo import console
from bot.demo.workspace import CHANNEL, Workspace

TOKEN = "xoxb-demo-test-token"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def _uploaded(workspace: Workspace, data: bytes, filename: str, alt: str = "") -> str:
    auth = f"Bearer {TOKEN}"
    top = workspace.api("chat.postMessage", {"channel": CHANNEL, "text": "incident"}, auth)
    upload = workspace.api("files.getUploadURLExternal", {"filename": filename, "length": str(len(data)),
                                                          "alt_txt": alt}, auth)
    assert workspace.upload(upload["file_id"], data)
    workspace.api("files.completeUploadExternal", {"files": json.dumps([{"id": upload["file_id"], "title": "Graph"}]),
                                                   "channel_id": CHANNEL, "thread_ts": top["ts"]}, auth)
    return upload["file_id"]


def test_an_uploaded_png_is_kept_as_a_picture_with_its_alt_text_and_rendered_as_an_image():
    workspace = Workspace(bot_token=TOKEN, signing_secret="s", base_url="http://127.0.0.1:9")
    file_id = _uploaded(workspace, PNG, "timeline.png", alt="503s began at 02:41 <b>")

    shared = workspace.file(file_id)
    assert (shared.image, shared.content, shared.alt_text) == (PNG, "", "503s began at 02:41 <b>")
    page = console.channel_html(workspace.visible_to("UALICE"), workspace.name_of)
    assert f'<img src="/files/{file_id}" alt="503s began at 02:41 &lt;b&gt;">' in page


def test_a_text_file_stays_a_folded_snippet():
    workspace = Workspace(bot_token=TOKEN, signing_secret="s", base_url="http://127.0.0.1:9")
    file_id = _uploaded(workspace, b"Onset: 02:41", "timeline.txt")

    assert workspace.file(file_id).content == "Onset: 02:41"
    assert "<pre>Onset: 02:41</pre>" in console.channel_html(workspace.visible_to("UALICE"), workspace.name_of)
