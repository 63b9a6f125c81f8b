"""An embedded Slack workspace: the Web API the bot calls, and people's commands and clicks into the bot.

It keeps what a Slack client would show — one incident channel, messages, threads,
edits, uploaded files and ephemeral messages (visible to one person only) — and
answers the Web API methods meshbot uses (``chat.postMessage``, ``chat.update``,
``chat.postEphemeral``, the files upload v2 flow, ``usergroups.users.list``,
``auth.test``, ``users.info``, ``conversations.info``), refusing a wrong bot token
and messages Slack would refuse.

Towards the bot it behaves as Slack does: slash commands and button clicks are
POSTed to ``/slack/events`` as form bodies signed with the signing secret
(``bot.demo.signing``), with a ``response_url`` that points back here, so the bot's
ephemeral answers arrive like Slack's.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.demo.signing import signed_headers

TEAM = "TDEMO"
BOT_USER = "UMESHBOT"
BOT_ID = "BMESHBOT"
APP_ID = "AMESHBOT"
CHANNEL = "CINCIDENTS"
CHANNEL_NAME = "incidents"
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    approver: bool = False


PEOPLE = (Person("UALICE", "alice"), Person("UBOB", "bob", approver=True), Person("UCAROL", "carol", approver=True))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class File:
    id: str
    title: str = ""
    filename: str = ""
    content: str = ""
    """A text file's text; empty for an image."""
    image: bytes = b""
    """A PNG's bytes (the console shows it as a picture, as Slack does)."""
    alt_text: str = ""


@dataclass
class Message:
    ts: str
    channel: str
    user: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    visible_to: str | None = None
    """Set for an ephemeral message: only this user sees it (and it is never in a thread's reply count)."""
    edited: bool = False
    files: list[File] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {"ts": self.ts, "channel": self.channel, "user": self.user, "text": self.text, "blocks": self.blocks,
                "thread_ts": self.thread_ts, "edited": self.edited, "ephemeral": self.visible_to is not None,
                "files": [{"id": f.id, "title": f.title, "filename": f.filename, "image": bool(f.image)}
                          for f in self.files]}


class SlackRefusal(Exception):
    """A Web API error Slack answers with ``ok: false``."""


def refusal(method: str, args: dict[str, Any]) -> str | None:
    """The error Slack would answer for a malformed message (docs of chat.postMessage and Block Kit limits)."""
    if not method.startswith("chat."):
        return None
    if not args.get("channel"):
        return "channel_not_found"
    blocks = args.get("blocks") or []
    if not args.get("text") and not blocks:
        return "no_text"
    if len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        texts = [block.get("text")] + list(block.get("fields") or [])
        limit = MAX_HEADER_TEXT if block.get("type") == "header" else MAX_SECTION_TEXT
        if any(t and len(t.get("text", "")) > limit for t in texts):
            return "invalid_blocks"
    return None


class Workspace:
    """The state of the embedded Slack and its Web API; every method is thread-safe."""

    def __init__(self, *, bot_token: str, signing_secret: str, base_url: str = ""):
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.base_url = base_url
        self.bot_url = ""
        """Where the bot listens (``http://127.0.0.1:PORT``); set once it has started."""
        self.people = {p.id: p for p in PEOPLE}
        self.messages: list[Message] = []
        self.uploads: dict[str, bytes] = {}
        self.version = 0
        """Bumped on every change, so the console only redraws when something happened."""
        self._pending_files: dict[str, File] = {}
        self._responders: dict[str, tuple[str, str, str | None]] = {}
        self._lock = threading.RLock()
        self._ts: Iterator[int] = itertools.count(1)

    # -- reading ---------------------------------------------------------------------

    def name_of(self, user_or_channel: str) -> str:
        if user_or_channel == BOT_USER:
            return "meshbot"
        if user_or_channel == CHANNEL:
            return CHANNEL_NAME
        person = self.people.get(user_or_channel)
        return person.name if person else user_or_channel

    def visible_to(self, user: str) -> list[Message]:
        """The channel as ``user`` sees it: every public message and their own ephemeral ones."""
        with self._lock:
            return [m for m in self.messages if m.visible_to in (None, user)]

    def find(self, ts: str) -> Message | None:
        with self._lock:
            return next((m for m in self.messages if m.ts == ts), None)

    # -- changing ----------------------------------------------------------------------

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _add(self, message: Message) -> Message:
        with self._lock:
            self.messages.append(message)
            self.version += 1
        return message

    def post(self, *, user: str, text: str = "", blocks: list | None = None, thread_ts: str | None = None,
             visible_to: str | None = None, channel: str = CHANNEL) -> Message:
        return self._add(Message(self._next_ts(), channel, user, text, list(blocks or []), thread_ts, visible_to))

    # -- the Web API -------------------------------------------------------------------

    def api(self, method: str, args: dict[str, Any], authorization: str) -> dict[str, Any]:
        """One Web API call; returns Slack's JSON answer (``ok`` true or false)."""
        if authorization != f"Bearer {self.bot_token}":
            return {"ok": False, "error": "invalid_auth"}
        problem = refusal(method, args)
        if problem:
            return {"ok": False, "error": problem}
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        try:
            return {"ok": True, **handler(args)}
        except SlackRefusal as exc:
            return {"ok": False, "error": str(exc)}

    def _channel(self, args: dict[str, Any]) -> str:
        if args.get("channel") != CHANNEL:
            raise SlackRefusal("channel_not_found")
        return CHANNEL

    def _auth_test(self, args: dict) -> dict:
        return {"url": "https://meshbot-demo.slack.com/", "team": "meshbot demo", "user": "meshbot",
                "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID}

    def _chat_postMessage(self, args: dict) -> dict:
        channel = self._channel(args)
        thread = args.get("thread_ts")
        if thread and self.find(thread) is None:
            raise SlackRefusal("thread_not_found")
        message = self.post(user=BOT_USER, text=args.get("text") or "", blocks=args.get("blocks"),
                            thread_ts=thread, channel=channel)
        return {"channel": channel, "ts": message.ts, "message": message.public()}

    def _chat_update(self, args: dict) -> dict:
        self._channel(args)
        with self._lock:
            message = self.find(str(args.get("ts")))
            if message is None or message.visible_to is not None:
                raise SlackRefusal("message_not_found")
            if message.user != BOT_USER:
                raise SlackRefusal("cant_update_message")
            message.text = args.get("text") or message.text
            message.blocks = list(args.get("blocks") or [])
            message.edited = True
            self.version += 1
        return {"channel": CHANNEL, "ts": message.ts, "text": message.text}

    def _chat_postEphemeral(self, args: dict) -> dict:
        self._channel(args)
        if args.get("user") not in self.people:
            raise SlackRefusal("user_not_in_channel")
        message = self.post(user=BOT_USER, text=args.get("text") or "", blocks=args.get("blocks"),
                            thread_ts=args.get("thread_ts"), visible_to=args["user"])
        return {"message_ts": message.ts}

    def _files_getUploadURLExternal(self, args: dict) -> dict:
        file_id = f"F{next(self._ts):08d}"
        with self._lock:
            self._pending_files[file_id] = File(file_id, filename=str(args.get("filename") or ""),
                                                alt_text=str(args.get("alt_txt") or ""))
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def upload(self, file_id: str, content: bytes) -> bool:
        with self._lock:
            if file_id not in self._pending_files:
                return False
            self.uploads[file_id] = content
            return True

    def _files_completeUploadExternal(self, args: dict) -> dict:
        files = args.get("files")
        files = json.loads(files) if isinstance(files, str) else files or []
        with self._lock:
            if any(f.get("id") not in self.uploads for f in files):
                raise SlackRefusal("file_not_found")
            done = []
            for entry in files:
                pending = self._pending_files.pop(entry["id"])
                data = self.uploads.get(entry["id"], b"")
                title = str(entry.get("title") or pending.filename)
                if data.startswith(PNG_SIGNATURE):
                    done.append(File(entry["id"], title, pending.filename, image=data, alt_text=pending.alt_text))
                else:
                    done.append(File(entry["id"], title, pending.filename, data.decode("utf-8", "replace")))
        channel = args.get("channel_id")
        if channel:
            if channel != CHANNEL:
                raise SlackRefusal("channel_not_found")
            message = Message(self._next_ts(), CHANNEL, BOT_USER, str(args.get("initial_comment") or ""),
                              thread_ts=args.get("thread_ts"), files=done)
            self._add(message)
        return {"files": [{"id": f.id, "title": f.title} for f in done]}

    def file(self, file_id: str) -> File | None:
        with self._lock:
            for message in self.messages:
                for attached in message.files:
                    if attached.id == file_id:
                        return attached
        return None

    def _usergroups_users_list(self, args: dict) -> dict:
        raise SlackRefusal("no_such_subteam")  # the demo's approvers are people, not a group

    def _users_info(self, args: dict) -> dict:
        person = self.people.get(str(args.get("user")))
        if person is None:
            raise SlackRefusal("user_not_found")
        return {"user": {"id": person.id, "name": person.name, "real_name": person.name, "team_id": TEAM}}

    def _conversations_info(self, args: dict) -> dict:
        self._channel(args)
        return {"channel": {"id": CHANNEL, "name": CHANNEL_NAME, "is_channel": True, "is_member": True}}

    # -- response_url --------------------------------------------------------------------

    def _response_url(self, user: str, channel: str, message_ts: str | None) -> str:
        token = secrets.token_urlsafe(12)
        with self._lock:
            self._responders[token] = (user, channel, message_ts)
        return f"{self.base_url}/response/{token}"

    def respond(self, token: str, body: dict[str, Any]) -> bool:
        """A POST to a response_url: ephemeral (default) or in channel, or replacing the clicked message."""
        with self._lock:
            target = self._responders.get(token)
        if target is None:
            return False
        user, _, message_ts = target
        if body.get("delete_original") and message_ts:
            with self._lock:
                self.messages = [m for m in self.messages if m.ts != message_ts]
                self.version += 1
            return True
        if body.get("replace_original") and message_ts:
            with self._lock:
                original = self.find(message_ts)
                if original is not None:
                    original.text, original.blocks = body.get("text") or "", list(body.get("blocks") or [])
                    original.edited = True
                    self.version += 1
                    return True
        in_channel = body.get("response_type") == "in_channel"
        self.post(user=BOT_USER, text=str(body.get("text") or ""), blocks=body.get("blocks"),
                  thread_ts=body.get("thread_ts"), visible_to=None if in_channel else user)
        return True

    # -- people -> bot --------------------------------------------------------------------

    def _forward(self, body: bytes) -> httpx.Response:
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   **signed_headers(self.signing_secret, body)}
        return httpx.post(f"{self.bot_url}/slack/events", content=body, headers=headers, timeout=10.0)

    def _answer_ack(self, user: str, response: httpx.Response) -> None:
        """What the bot put in its ack (usage, help, refusals) is an ephemeral answer, as in Slack."""
        if response.status_code != 200:
            self.post(user=BOT_USER, visible_to=user,
                      text=f"meshbot did not accept the request (HTTP {response.status_code}).")
            return
        if not response.content:
            return
        try:
            answer = response.json()
        except ValueError:
            answer = {"text": response.text}
        if isinstance(answer, dict) and (answer.get("text") or answer.get("blocks")):
            self.post(user=BOT_USER, text=str(answer.get("text") or ""), blocks=answer.get("blocks"),
                      visible_to=None if answer.get("response_type") == "in_channel" else user)

    def slash_command(self, user: str, text: str, command: str = "/mesh") -> None:
        """``user`` typed ``/mesh text``: only they see it echoed, and it goes to the bot signed."""
        person = self.people[user]
        self.post(user=user, text=f"{command} {text}".strip(), visible_to=user)
        body = urllib.parse.urlencode({
            "token": "deprecated-verification-token", "team_id": TEAM, "team_domain": "meshbot-demo",
            "channel_id": CHANNEL, "channel_name": CHANNEL_NAME, "user_id": person.id, "user_name": person.name,
            "command": command, "text": text, "api_app_id": APP_ID, "is_enterprise_install": "false",
            "response_url": self._response_url(user, CHANNEL, None),
            "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(8)}",
        }).encode()
        self._answer_ack(user, self._forward(body))

    def click(self, user: str, message_ts: str, action: dict[str, Any]) -> None:
        """``user`` pressed a button of message ``message_ts``: a ``block_actions`` payload, signed."""
        person = self.people[user]
        message = self.find(message_ts)
        if message is None or message.visible_to not in (None, user):
            raise SlackRefusal("message_not_found")
        payload = {
            "type": "block_actions", "team": {"id": TEAM, "domain": "meshbot-demo"},
            "user": {"id": person.id, "username": person.name, "name": person.name, "team_id": TEAM},
            "api_app_id": APP_ID, "token": "deprecated-verification-token",
            "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(8)}",
            "container": {"type": "message", "message_ts": message.ts, "channel_id": CHANNEL,
                          "is_ephemeral": message.visible_to is not None},
            "channel": {"id": CHANNEL, "name": CHANNEL_NAME},
            "message": {"type": "message", "ts": message.ts, "text": message.text, "user": message.user,
                        "blocks": message.blocks, **({"thread_ts": message.thread_ts} if message.thread_ts else {})},
            "response_url": self._response_url(user, CHANNEL, message.ts),
            "actions": [{"type": "button", "action_id": str(action.get("action_id", "")),
                         "block_id": str(action.get("block_id", "")), "value": str(action.get("value", "")),
                         "text": {"type": "plain_text", "text": str(action.get("text", ""))},
                         "action_ts": f"{time.time():.6f}"}],
        }
        self._answer_ack(user, self._forward(urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()))
