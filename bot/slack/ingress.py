"""The gate in front of Bolt for ``POST /slack/events``: signature first, then shape, then replays.

Nothing of a request's body is parsed before its signature is verified: a
forged or garbled request costs one HMAC and is answered 401 without Bolt (or
its JSON and form parsers) ever seeing it.  A signed request whose body is not
what Slack sends (not UTF-8, a ``payload`` that is not a JSON object, a
``block_actions`` without a user or actions) is answered 400.  A signed request
already handled (same timestamp and signature, or a retried Events API delivery
with ``X-Slack-Retry-Num`` and an ``event_id`` already seen) is answered 200
without running again.

How Slack signs: https://docs.slack.dev/authentication/verifying-requests-from-slack/
(``v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")``, reject timestamps more than
five minutes from now).  Slack's retries: https://docs.slack.dev/apis/events-api/
("Slack will retry… with ``X-Slack-Retry-Num`` and ``X-Slack-Retry-Reason``").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from slack_sdk.signature import Clock, SignatureVerifier

from bot.slack.replays import Deliveries, ReplayGuard

log = logging.getLogger(__name__)

WINDOW_SECONDS = 5 * 60
"""Slack's documented window: a timestamp further than this from now is a replay or a wrong clock."""
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
LOG_INTERVAL_SECONDS = 10.0


class Rejection(StrEnum):
    """Why a request to ``/slack/events`` was refused (the ``reason`` label in ``/metrics``)."""

    MISSING_SIGNATURE = "missing_signature"
    BAD_TIMESTAMP = "bad_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    BAD_SIGNATURE = "bad_signature"
    MALFORMED = "malformed"

    @property
    def status(self) -> int:
        """401 when we cannot tell the request is Slack's; 400 when it is signed but not something Slack sends."""
        return 400 if self is Rejection.MALFORMED else 401


@dataclass(frozen=True)
class Admission:
    """The gate's verdict: go on to Bolt, answer 200 as a duplicate, or refuse."""

    rejection: Rejection | None = None
    detail: str = ""
    """Why, for the log: never a piece of the body (it carries ``response_url``, a credential to answer)."""
    duplicate: bool = False
    body: dict[str, Any] = field(default_factory=dict)
    """What Slack sent, parsed once, as Bolt wants it: the form's fields, an interaction's decoded ``payload``, or
    the JSON event (``bot.server.http`` hands it to Bolt as it is)."""

    @property
    def admitted(self) -> bool:
        return self.rejection is None and not self.duplicate


@dataclass(frozen=True)
class SlackHeaders:
    timestamp: str | None
    signature: str | None
    retry_num: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any]) -> SlackHeaders:
        return cls(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP"), environ.get("HTTP_X_SLACK_SIGNATURE"),
                   environ.get("HTTP_X_SLACK_RETRY_NUM"))


class _WallClock(Clock):
    def __init__(self, now: Callable[[], float]):
        self._now = now

    def now(self) -> float:
        return self._now()


class SlackRequestGate:
    """Verify, check the shape, drop replays: what ``/slack/events`` does before Bolt sees a request."""

    def __init__(self, signing_secret: str, *, clock: Callable[[], float] = time.time,
                 replays: Deliveries | None = None):
        self._verifier = SignatureVerifier(signing_secret, clock=_WallClock(clock))
        self._secret = signing_secret.encode()
        self._clock = clock
        self.replays: Deliveries = replays or ReplayGuard(WINDOW_SECONDS)

    def signature_refusal(self, headers: SlackHeaders, body: bytes) -> tuple[Rejection, str] | None:
        """Why a request Slack did not sign is refused (missing, forged, stale), and the detail for the log; None:
        go on to ``admit_signed``.

        Two steps so that the server can count a request as Slack's from here on (``bot.runtime.priority``:
        background work waits for signed requests only, so nobody without the secret can hold it back)."""
        rejection, detail = self._signature_problem(headers, body)
        return (rejection, detail) if rejection is not None else None

    def admit_signed(self, headers: SlackHeaders, body: bytes, content_type: str) -> Admission:
        """For a request ``signature_refusal`` passed: refuse a body that is not what Slack sends, drop replays."""
        fields_or_problem = body_problem(body, content_type)
        if isinstance(fields_or_problem, str):
            return Admission(Rejection.MALFORMED, fields_or_problem)
        if self._seen(headers, fields_or_problem):
            return Admission(duplicate=True, detail="already handled (replay or Slack retry)")
        return Admission(body=fields_or_problem)

    def _signature_problem(self, headers: SlackHeaders, body: bytes) -> tuple[Rejection | None, str]:
        if not headers.timestamp or not headers.signature:
            return Rejection.MISSING_SIGNATURE, "no X-Slack-Signature or X-Slack-Request-Timestamp"
        if not _TIMESTAMP.fullmatch(headers.timestamp):
            return Rejection.BAD_TIMESTAMP, "X-Slack-Request-Timestamp is not a Unix time in seconds"
        skew = abs(self._clock() - int(headers.timestamp))
        if skew > WINDOW_SECONDS:
            return Rejection.STALE_TIMESTAMP, f"timestamp {int(skew)}s away from now (allowed: {WINDOW_SECONDS}s)"
        # hmac.compare_digest refuses non-ASCII strings, so the format is checked before the comparison.
        if not _SIGNATURE.fullmatch(headers.signature) or not self._signature_matches(
                body, headers.timestamp, headers.signature):
            return Rejection.BAD_SIGNATURE, "signature does not match the signing secret"
        return None, ""

    def _signature_matches(self, body: bytes, timestamp: str, signature: str) -> bool:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            # slack_sdk's verifier decodes the body before hashing it.  Slack only sends UTF-8, but whether
            # such a body is signed (400) or not (401) is still decided by the same HMAC over its bytes.
            base = f"v0:{timestamp}:".encode() + body
            expected = "v0=" + hmac.new(self._secret, base, hashlib.sha256).hexdigest()
            return hmac.compare_digest(expected, signature)
        return self._verifier.is_valid(body, timestamp, signature)

    def _seen(self, headers: SlackHeaders, fields: dict[str, Any]) -> bool:
        """Remember this request; True when it (or, for a retried event, its event_id) was handled already."""
        # Remembered until the request's own timestamp leaves Slack's window: after that the signature check
        # refuses it as stale, so the key is no longer needed (however late this replica first saw it).
        signed_at = int(headers.timestamp or 0)
        replayed = not self.replays.first_time(("signature", headers.timestamp, headers.signature),
                                               signed_at + WINDOW_SECONDS)
        event_id = fields.get("event_id")
        if isinstance(event_id, str) and event_id:
            # A retry is signed anew (new timestamp), so only the event_id tells it is the same event.  Slack
            # retries for up to five minutes after the first delivery, each retry valid five minutes itself.
            retried = not self.replays.first_time(("event", event_id), signed_at + 2 * WINDOW_SECONDS)
            return replayed or (retried and headers.retry_num is not None)
        return replayed


# -- what Slack sends ---------------------------------------------------------------------------------------

def body_problem(body: bytes, content_type: str) -> dict[str, Any] | str:
    """The body's top-level fields when it is shaped like a Slack request, else what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8"
    if "json" in content_type.lower():
        return _json_event_problem(text)
    try:
        fields = dict(urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))
    except ValueError:
        return "body is not form-encoded"
    if "payload" in fields:
        return _interaction_problem(fields["payload"])
    if "command" in fields:
        missing = [k for k in ("command", "user_id", "channel_id") if not fields.get(k)]
        return f"slash command without {', '.join(missing)}" if missing else fields
    if fields.get("ssl_check"):
        return fields
    return "neither a slash command nor an interaction payload"


MAX_JSON_DEPTH = 64
"""Deeper than any Slack payload (Block Kit nests a few levels; Slack caps a view at 100 blocks): a deeper body
is refused before ``json.loads``, whose recursion would otherwise end in a RecursionError (a 500)."""


def json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply arrays and objects nest in ``text`` (stops counting past ``limit``), strings skipped."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def _json_object(text: str) -> dict[str, Any] | None:
    if json_depth(text) > MAX_JSON_DEPTH:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: belt and braces for a smaller interpreter stack
        return None
    return value if isinstance(value, dict) else None


def _json_event_problem(text: str) -> dict[str, Any] | str:
    event = _json_object(text)
    if event is None:
        return f"JSON body is not an object (or nests deeper than {MAX_JSON_DEPTH} levels)"
    kind = event.get("type")
    if kind == "url_verification":
        return event if isinstance(event.get("challenge"), str) else "url_verification without a challenge"
    if kind == "event_callback":
        if not isinstance(event.get("event"), dict) or not isinstance(event.get("event_id"), str):
            return "event_callback without event or event_id"
        return event
    if isinstance(kind, str) and kind:
        return event
    return "JSON body has no type"


def _interaction_problem(payload_text: str) -> dict[str, Any] | str:
    payload = _json_object(payload_text)
    if payload is None:
        return f"payload is not a JSON object (or nests deeper than {MAX_JSON_DEPTH} levels)"
    kind = payload.get("type")
    if not isinstance(kind, str) or not kind:
        return "payload has no type"
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        return f"{kind} without user.id"
    if kind == "block_actions":
        actions = payload.get("actions")
        if not isinstance(actions, list) or not actions or not all(
                isinstance(a, dict) and isinstance(a.get("action_id"), str) and a["action_id"] for a in actions):
            return "block_actions without actions (each with an action_id)"
        for name in ("channel", "container", "message"):
            if name in payload and not isinstance(payload[name], (dict, type(None))):
                return f"block_actions with a {name} that is not an object"
        if "response_url" in payload and not isinstance(payload["response_url"], str):
            return "block_actions with a response_url that is not a string"
    return payload


# -- one line per rejection, at a rate the log can take -----------------------------------------------------

class RateLimitedLog:
    """At most one line per reason per interval; the next line says how many were left out."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, reason: str, message: str, *args: Any) -> bool:
        """Log unless a line for ``reason`` was logged within the interval; True when logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(reason)
            if last is not None and now - last < self._interval:
                self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
                return False
            self._last[reason] = now
            left_out = self._suppressed.pop(reason, 0)
        if left_out:
            message += " (%d more like it in the last %.0fs not logged)"
            args = (*args, left_out, self._interval)
        self._logger.warning(message, *args)
        return True
