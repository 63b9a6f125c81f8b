"""Block Kit and Slack mrkdwn to HTML for the console, escaping everything that came from outside.

Text in Slack messages is already Slack-escaped (``&amp; &lt; &gt;``) and carries
``<…>`` tokens for links and mentions (api.slack.com/reference/surfaces/formatting).
Each piece is turned back into plain text and then HTML-escaped exactly once, so a
message can show ``<script>`` but never run it.  Attribute values (button values,
confirmation texts) go through the same escaping.  Pure functions: no I/O.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

EMOJI = {
    "rotating_light": "\U0001f6a8", "white_check_mark": "\u2705", "x": "\u274c", "warning": "\u26a0\ufe0f",
    "no_entry": "\u26d4", "hourglass": "\u231b", "leftwards_arrow_with_hook": "\u21a9\ufe0f", "fire": "\U0001f525",
    "red_circle": "\U0001f534", "large_orange_circle": "\U0001f7e0", "large_yellow_circle": "\U0001f7e1",
    "large_blue_circle": "\U0001f535", "information_source": "\u2139\ufe0f", "mag": "\U0001f50d",
    "green_heart": "\U0001f49a", "memo": "\U0001f4dd", "lock": "\U0001f512", "bell": "\U0001f514",
    "stopwatch": "\u23f1\ufe0f", "wrench": "\U0001f527", "heavy_check_mark": "\u2714\ufe0f",
}
_TOKEN = re.compile(r"<([^<>]*)>")
_SLACK_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))
_SAFE_URL = re.compile(r"^https?://[^\s\"'<>]+$")

Names = Callable[[str], str]
"""User or channel ID -> display name."""


def _slack_unescape(text: str) -> str:
    for entity, char in _SLACK_ENTITIES:
        text = text.replace(entity, char)
    return text


def _inline(escaped: str) -> str:
    """Bold, italic, strike and emoji on already HTML-escaped text (their markers survive escaping)."""
    escaped = re.sub(r"(?<![\w*])\*(?!\s)([^*\n]+?)\*(?![\w*])", r"<b>\1</b>", escaped)
    escaped = re.sub(r"(?<![\w_])_(?!\s)([^_\n]+?)_(?![\w_])", r"<i>\1</i>", escaped)
    escaped = re.sub(r"(?<![\w~])~(?!\s)([^~\n]+?)~(?![\w~])", r"<s>\1</s>", escaped)
    return re.sub(r":([a-z0-9_+-]+):", lambda m: EMOJI.get(m.group(1), m.group(0)), escaped)


def _token(body: str, names: Names) -> str:
    """One ``<…>`` token as HTML."""
    target, _, label = body.partition("|")
    if target.startswith("@"):
        return f'<span class="mention">@{html.escape(names(target[1:]))}</span>'
    if target.startswith("#"):
        return f'<span class="mention">#{html.escape(_slack_unescape(label) or names(target[1:]))}</span>'
    if target.startswith("!"):
        return f'<span class="mention">@{html.escape(target[1:].split("^")[0])}</span>'
    url = _slack_unescape(target)
    shown = html.escape(_slack_unescape(label) or url)
    if _SAFE_URL.match(url):
        return f'<a href="{html.escape(url, quote=True)}" target="_blank" rel="noopener noreferrer">{shown}</a>'
    return shown


def _plain_run(text: str, names: Names, *, formatting: bool) -> str:
    """Slack text outside code: tokens become links/mentions, the rest is escaped (and formatted)."""
    out, at = [], 0
    for match in _TOKEN.finditer(text):
        piece = html.escape(_slack_unescape(text[at:match.start()]))
        out.append(_inline(piece) if formatting else piece)
        out.append(_token(match.group(1), names))
        at = match.end()
    piece = html.escape(_slack_unescape(text[at:]))
    out.append(_inline(piece) if formatting else piece)
    return "".join(out)


def mrkdwn(text: str, names: Names = str) -> str:
    """Slack mrkdwn -> HTML: ```pre```, `code`, *bold*, _italic_, ~strike~, links, mentions, emoji."""
    out = []
    for index, chunk in enumerate(text.split("```")):
        if index % 2:
            out.append(f"<pre>{html.escape(_slack_unescape(chunk.strip(chr(10))))}</pre>")
            continue
        for part_index, part in enumerate(re.split(r"`([^`\n]+)`", chunk)):
            if part_index % 2:
                out.append(f"<code>{html.escape(_slack_unescape(part))}</code>")
            else:
                out.append(_plain_run(part, names, formatting=True))
    return "".join(out).replace("\n", "<br>")


def text_object(obj: Mapping[str, Any] | str | None, names: Names = str) -> str:
    """A Block Kit text object (plain_text or mrkdwn) as HTML."""
    if obj is None:
        return ""
    if isinstance(obj, str):
        return html.escape(obj)
    if obj.get("type") == "mrkdwn":
        return mrkdwn(str(obj.get("text", "")), names)
    return _inline(html.escape(str(obj.get("text", ""))))


def _attr(value: Any) -> str:
    return html.escape(str(value), quote=True)


def button(element: Mapping[str, Any], block_id: str, message: Mapping[str, str]) -> str:
    """A button; what a click sends (and its confirmation dialog) rides in escaped data attributes."""
    action = {"action_id": element.get("action_id", ""), "block_id": block_id, "value": element.get("value", ""),
              "text": (element.get("text") or {}).get("text", "")}
    confirm = element.get("confirm")
    attrs = {"data-action": json.dumps(action), "data-ts": message.get("ts", ""),
             "data-ephemeral": "1" if message.get("ephemeral") else ""}
    if confirm:
        attrs["data-confirm"] = json.dumps({key: (confirm.get(key) or {}).get("text", "")
                                            for key in ("title", "text", "confirm", "deny")})
    style = element.get("style") or "default"
    shown = " ".join(f'{key}="{_attr(value)}"' for key, value in attrs.items())
    label = html.escape(str((element.get("text") or {}).get("text", "")))
    return f'<button class="bk-button {_attr(style)}" {shown}>{label}</button>'


def block(data: Mapping[str, Any], message: Mapping[str, str], names: Names = str) -> str:
    """One Block Kit block as HTML; unknown types say so instead of disappearing."""
    kind = data.get("type")
    if kind == "header":
        return f'<div class="bk-header">{text_object(data.get("text"), names)}</div>'
    if kind == "divider":
        return '<hr class="bk-divider">'
    if kind == "section":
        parts = [f'<div class="bk-text">{text_object(data.get("text"), names)}</div>'] if data.get("text") else []
        if data.get("fields"):
            cells = "".join(f'<div class="bk-field">{text_object(f, names)}</div>' for f in data["fields"])
            parts.append(f'<div class="bk-fields">{cells}</div>')
        accessory = data.get("accessory") or {}
        if accessory.get("type") == "button":
            parts.append(button(accessory, str(data.get("block_id", "")), message))
        return f'<div class="bk-section">{"".join(parts)}</div>'
    if kind == "context":
        items = "".join(f"<span>{text_object(e, names)}</span>" for e in data.get("elements") or []
                        if e.get("type") in ("mrkdwn", "plain_text"))
        return f'<div class="bk-context">{items}</div>'
    if kind == "actions":
        buttons = "".join(button(e, str(data.get("block_id", "")), message) for e in data.get("elements") or []
                          if e.get("type") == "button")
        return f'<div class="bk-actions">{buttons}</div>'
    return f'<div class="bk-unknown">({html.escape(str(kind))} block)</div>'


def blocks(items: Sequence[Mapping[str, Any]], message: Mapping[str, str], names: Names = str) -> str:
    return "".join(block(b, message, names) for b in items)
