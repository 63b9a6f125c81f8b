"""``/mesh …`` text -> a typed request.  Pure: no Slack, no cluster.

Each subcommand registers a parser with ``@subcommand``; adding one is one new
function.  Anything wrong with the text raises ``UsageError`` whose message is
shown to the user (ephemerally) together with the usage line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from commands.actions.targets import USAGE, ActionName, ActionUsageError, parse_action
from commands.errors import UserError
from commands.validation import is_dns1123_label, is_dns1123_subdomain


class UsageError(UserError):
    """The slash-command text is wrong; the message says what and how to fix it."""


@dataclass(frozen=True)
class HelpRequest:
    topic: str | None = None


@dataclass(frozen=True)
class DiagnoseRequest:
    label: str
    """What the user typed (``diagnose``, ``certs``) — used in messages."""
    checks: tuple[str, ...]
    namespace: str | None


Parser = Callable[[list[str], str], Any]
"""(words after the subcommand, the raw rest of the text) -> request."""


@dataclass(frozen=True)
class Subcommand:
    name: str
    usage: str
    summary: str
    parse: Parser


SUBCOMMANDS: dict[str, Subcommand] = {}


def subcommand(name: str, *, usage: str, summary: str) -> Callable[[Parser], Parser]:
    def register(parse: Parser) -> Parser:
        SUBCOMMANDS[name] = Subcommand(name, usage, summary, parse)
        return parse
    return register


def parse(text: str) -> Any:
    """The request for ``/mesh <text>``; empty text is ``help``."""
    words = text.split()
    if not words:
        return HelpRequest()
    name, rest = words[0].lower(), text.strip()[len(words[0]):].strip()
    spec = SUBCOMMANDS.get(name)
    if spec is None:
        raise UsageError(f"unknown subcommand `{words[0][:40]}`. Try `/mesh help`.")
    return spec.parse(words[1:], rest)


def namespace_argument(value: str) -> str:
    """A namespace typed by a person: must be a DNS-1123 label before it goes near the API."""
    if not is_dns1123_label(value):
        raise UsageError(f"`{value[:80]}` is not a valid namespace name (lower-case letters, digits and '-', "
                         "at most 63 characters)")
    return value


def object_name_argument(value: str, what: str) -> str:
    if not is_dns1123_subdomain(value):
        raise UsageError(f"`{value[:80]}` is not a valid {what} name")
    return value


def expect_at_most(words: list[str], count: int, usage: str) -> None:
    if len(words) > count:
        raise UsageError(f"too many arguments. Usage: `/mesh {usage}`")


def help_text() -> str:
    lines = ["*meshbot* \u2014 service-mesh diagnostics and approved remediations", ""]
    lines += [f"`/mesh {spec.usage}` \u2014 {spec.summary}" for spec in SUBCOMMANDS.values()]
    return "\n".join(lines)


@subcommand("help", usage="help", summary="this list")
def _help(words: list[str], rest: str) -> HelpRequest:
    return HelpRequest(words[0] if words else None)


def _diagnose_parser(label: str, checks: tuple[str, ...]) -> Parser:
    usage = f"{label} [NAMESPACE]"

    def parse_diagnose(words: list[str], rest: str) -> DiagnoseRequest:
        expect_at_most(words, 1, usage)
        namespace = namespace_argument(words[0]) if words else None
        return DiagnoseRequest(label=label, checks=checks, namespace=namespace)
    return parse_diagnose


for _label, _checks, _summary in [
    ("status", ("status",), "istiod, gateway and sidecar health"),
    ("proxy-status", ("proxy-status",), "xDS sync state of every proxy (istioctl proxy-status)"),
    ("certs", ("certs",), "root CA, root ConfigMaps, gateway and workload certificate expiry"),
    ("envoy", ("envoy",), "circuit breakers, 503s, retries and memory of sidecars"),
    ("analyze", ("analyze",), "Istio configuration analysis (istioctl analyze)"),
    ("diagnose", ("all",), "all of the above"),
]:
    subcommand(_label, usage=f"{_label} [NAMESPACE]", summary=_summary)(_diagnose_parser(_label, _checks))


@dataclass(frozen=True)
class IncidentRequest:
    op: str
    """list, show, note or resolve."""
    incident_id: int | None = None
    text: str = ""


INCIDENT_USAGE = "incident list | incident show ID | incident note ID TEXT | incident resolve ID"
MAX_NOTE_LENGTH = 2000


def _incident_id(value: str) -> int:
    number = value.lstrip("#")
    if not number.isdigit() or len(number) > 12:
        raise UsageError(f"`{value[:20]}` is not an incident number. Usage: `/mesh {INCIDENT_USAGE}`")
    return int(number)


@subcommand("incident", usage=INCIDENT_USAGE, summary="open incidents, a timeline, add a note, resolve")
def _incident(words: list[str], rest: str) -> IncidentRequest:
    if not words:
        raise UsageError(f"which incident command? Usage: `/mesh {INCIDENT_USAGE}`")
    op = words[0].lower()
    if op == "list":
        expect_at_most(words, 1, "incident list")
        return IncidentRequest("list")
    if op in ("show", "resolve"):
        if len(words) != 2:
            raise UsageError(f"usage: `/mesh incident {op} ID`")
        return IncidentRequest(op, _incident_id(words[1]))
    if op == "note":
        if len(words) < 3:
            raise UsageError("usage: `/mesh incident note ID TEXT`")
        incident_id = _incident_id(words[1])
        text = rest.split(None, 2)[2].strip()
        if len(text) > MAX_NOTE_LENGTH:
            raise UsageError(f"a note can be at most {MAX_NOTE_LENGTH} characters")
        return IncidentRequest("note", incident_id, text)
    raise UsageError(f"unknown incident command `{op[:20]}`. Usage: `/mesh {INCIDENT_USAGE}`")


# -- /mesh permissive-mtls | bypass | restart -----------------------------------------------


@dataclass(frozen=True)
class ActionRequest:
    words: tuple[str, ...]
    """The action as typed (``restart istiod -n istio-system``), already validated by ``parse_action``."""
    incident_id: int | None = None
    reason: str = ""


MAX_REASON_LENGTH = 500
ACTION_OPTIONS = "[--incident ID] [--reason TEXT]"


def _action_parser(name: str) -> Parser:
    def parse_request(words: list[str], rest: str) -> ActionRequest:
        words = [name, *words]
        incident_id: int | None = None
        reason = ""
        if "--reason" in words:
            at = words.index("--reason")
            reason = " ".join(words[at + 1:]).strip()
            words = words[:at]
            if not reason:
                raise UsageError("`--reason` needs some text: why is this action needed?")
            if len(reason) > MAX_REASON_LENGTH:
                raise UsageError(f"a reason can be at most {MAX_REASON_LENGTH} characters")
        for flag in [w for w in words if w == "--incident" or w.startswith("--incident=")]:
            at = words.index(flag)
            value = flag.split("=", 1)[1] if "=" in flag else (words[at + 1] if at + 1 < len(words) else "")
            incident_id = _incident_id(value)
            del words[at:at + (1 if "=" in flag else 2)]
        try:
            parse_action(words)
        except ActionUsageError as exc:
            raise UsageError(f"{exc} {ACTION_OPTIONS}") from None
        return ActionRequest(tuple(words), incident_id, reason)
    return parse_request


for _name in ActionName:
    subcommand(_name.value, usage=f"{USAGE[_name]} {ACTION_OPTIONS}",
               summary={"permissive-mtls": "ask to accept plain-text traffic (needs approvals)",
                        "bypass": "ask to take a workload or namespace out of the mesh (needs approvals)",
                        "restart": "ask for a rollout restart of istiod or a Deployment (needs approvals)",
                        }[_name.value])(_action_parser(_name.value))


@dataclass(frozen=True)
class RemindersRequest:
    pass


@subcommand("reminders", usage="reminders", summary="certificates by expiry, soonest first")
def _reminders(words: list[str], rest: str) -> RemindersRequest:
    expect_at_most(words, 0, "reminders")
    return RemindersRequest()
