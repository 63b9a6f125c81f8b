"""``/mesh …`` text -> a typed request.  Pure: no Slack, no cluster.

Each subcommand registers a parser with ``@subcommand``; adding one is one new
function.  Anything wrong with the text raises ``UsageError`` whose message is
shown to the user (ephemerally) together with the usage line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
