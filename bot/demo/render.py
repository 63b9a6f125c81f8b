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
    # Glyphs every system font has (DejaVu, Liberation, …), coloured by the stylesheet: the console then looks
    # the same in a bare headless browser as on a desktop with an emoji font.
    "red_circle": ("\u25cf", "red"), "large_orange_circle": ("\u25cf", "orange"),
    "large_yellow_circle": ("\u25cf", "yellow"), "large_blue_circle": ("\u25cf", "blue"),
    "white_check_mark": ("\u2714", "green"), "heavy_check_mark": ("\u2714", "green"), "x": ("\u2718", "red"),
    "warning": ("\u26a0", "orange"), "rotating_light": ("\u2691", "red"), "no_entry": ("\u2298", "red"),
    "no_entry_sign": ("\u2298", "red"), "hourglass": ("\u231b", "grey"), "hourglass_flowing_sand": ("\u231b", "grey"),
    "leftwards_arrow_with_hook": ("\u21a9", "blue"), "memo": ("\u270e", "grey"), "gear": ("\u2699", "grey"),
    "bell": ("\u2691", "orange"), "link": ("\u2197", "blue"), "tada": ("\u2726", "green"),
    "heavy_plus_sign": ("+", "grey"), "memory": ("\u25a4", "grey"), "fire": ("\u2668", "red"),
}
RAW_EMOJI = {"\u2705": ("\u2714", "green"), "\u274c": ("\u2718", "red"), "\U0001f534": ("\u25cf", "red"),
             "\U0001f7e0": ("\u25cf", "orange"), "\U0001f7e1": ("\u25cf", "yellow"),
             "\U0001f535": ("\u25cf", "blue"), "\U0001f6a8": ("\u2691", "red")}
"""Emoji the bot writes as characters, drawn with the same plain glyphs."""
_RAW_EMOJI = re.compile("|".join(RAW_EMOJI))
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
    escaped = _RAW_EMOJI.sub(lambda m: '<span class="emoji {1}">{0}</span>'.format(*RAW_EMOJI[m.group(0)]), escaped)
    return re.sub(r":([a-z0-9_+-]+):", _emoji, escaped)


def _emoji(match: re.Match) -> str:
    known = EMOJI.get(match.group(1))
    if known is None:
        return match.group(0)
    glyph, colour = known
    return f'<span class="emoji {colour}" title=":{match.group(1)}:">{glyph}</span>'


def _token(body: str, names: Names) -> str:
    """One ``<…>`` token as HTML."""
    target, _, label = body.partition("|")
    if target.startswith("@"):
        return f'<span class="mention">@{html.escape(names(target[1:]))}</span>'
    if target.startswith("#"):
        return f'<span class="mention">#{html.escape(_slack_unescape(label) or names(target[1:]))}</span>'
    if target.startswith("!date^"):
        return html.escape(_slack_unescape(label))  # the fallback text Slack shows where it cannot localise
    if target.startswith("!subteam^"):
        return f'<span class="mention">@{html.escape(_slack_unescape(label) or target.split("^", 1)[1])}</span>'
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
        # Code spans become placeholders first, so *bold `code` text* still reads as bold around the code.
        spans: list[str] = []

        def hold(match: re.Match) -> str:
            spans.append(f"<code>{html.escape(_slack_unescape(match.group(1)))}</code>")
            return f"\x00{len(spans) - 1}\x00"
        text_with_holes = re.sub(r"`([^`\n]+)`", hold, chunk.replace("\x00", ""))
        rendered = _plain_run(text_with_holes, names, formatting=True)
        out.append(re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], rendered))
    return "".join(out).replace("\n", "<br>")


def text_object(obj: Mapping[str, Any] | str | None, names: Names = str) -> str:
    """A Block Kit text object (plain_text or mrkdwn) as HTML."""
    if obj is None:
        return ""
    if isinstance(obj, str):
        return html.escape(obj)
    if obj.get("type") == "mrkdwn":
        return mrkdwn(str(obj.get("text", "")), names)
    return _RAW_EMOJI.sub(lambda m: '<span class="emoji {1}">{0}</span>'.format(*RAW_EMOJI[m.group(0)]),
                          re.sub(r":([a-z0-9_+-]+):", _emoji, html.escape(str(obj.get("text", "")))))


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
