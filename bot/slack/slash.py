"""``/mesh …`` text -> a typed request.  Pure: no Slack, no cluster.

``SlashCommands`` is the registry of subcommands: each feature's ``register``
adds its own (name, usage, summary, parser), ``bot.server.wiring`` hands the
one registry to every feature, and ``help`` lists whatever was added.  Anything
wrong with the text raises ``UsageError`` whose message is shown to the user
(ephemerally) together with the usage lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from commands.checks.registry import ALL, CheckRegistry
from commands.errors import UserError
from commands.validation import namespace_problem


class UsageError(UserError):
    """The slash-command text is wrong; the message says what and how to fix it."""


@dataclass(frozen=True)
class HelpRequest:
    topic: str | None = None


Parser = Callable[[list[str], str], Any]
"""(words after the subcommand, the raw rest of the text) -> request."""


@dataclass(frozen=True)
class Subcommand:
    name: str
    usage: str
    summary: str
    parse: Parser


class SlashCommands:
    """The ``/mesh`` subcommands, in the order ``help`` lists them (``help`` itself first)."""

    def __init__(self) -> None:
        self._subcommands: dict[str, Subcommand] = {}
        self.add("help", usage="help", summary="this list", parse=_help)

    def add(self, name: str, *, usage: str, summary: str, parse: Parser) -> None:
        if name in self._subcommands:
            raise ValueError(f"/mesh {name} is registered twice")
        self._subcommands[name] = Subcommand(name, usage, summary, parse)

    def names(self) -> tuple[str, ...]:
        return tuple(self._subcommands)

    def parse(self, text: str) -> Any:
        """The request for ``/mesh <text>``; empty text is ``help``."""
        words = text.split()
        if not words:
            return HelpRequest()
        name, rest = words[0].lower(), text.strip()[len(words[0]):].strip()
        spec = self._subcommands.get(name)
        if spec is None:
            raise UsageError(f"unknown subcommand `{words[0][:40]}`. Try `/mesh help`.")
        return spec.parse(words[1:], rest)

    def help_text(self) -> str:
        lines = ["*meshbot* \u2014 service-mesh diagnostics and approved remediations", ""]
        lines += [f"`/mesh {spec.usage}` \u2014 {spec.summary}" for spec in self._subcommands.values()]
        return "\n".join(lines)


def _help(words: list[str], rest: str) -> HelpRequest:
    return HelpRequest(words[0] if words else None)


# -- arguments shared by the features' parsers ------------------------------------------


def namespace_argument(value: str) -> str:
    """A namespace typed by a person: must be a DNS-1123 label before it goes near the API."""
    problem = namespace_problem(value)
    if problem:
        raise UsageError(problem)
    return value


def expect_at_most(words: list[str], count: int, usage: str) -> None:
    if len(words) > count:
        raise UsageError(f"too many arguments. Usage: `/mesh {usage}`")


# -- /mesh status|proxy-status|certs|envoy|analyze|diagnose ------------------------------


@dataclass(frozen=True)
class DiagnoseRequest:
    label: str
    """What the user typed (``diagnose``, ``certs``) — used in messages."""
    checks: tuple[str, ...]
    namespace: str | None


DIAGNOSE_ALL = "diagnose"
"""The subcommand that runs every check."""


def diagnose_parser(label: str, checks: tuple[str, ...]) -> Parser:
    usage = f"{label} [NAMESPACE]"

    def parse_diagnose(words: list[str], rest: str) -> DiagnoseRequest:
        expect_at_most(words, 1, usage)
        namespace = namespace_argument(words[0]) if words else None
        return DiagnoseRequest(label=label, checks=checks, namespace=namespace)
    return parse_diagnose


def add_diagnoses(commands: SlashCommands, checks: CheckRegistry) -> None:
    """One subcommand per check (its summary from the check), then ``diagnose`` for all of them."""
    for spec in checks:
        commands.add(spec.name, usage=f"{spec.name} [NAMESPACE]", summary=spec.summary,
                     parse=diagnose_parser(spec.name, (spec.name,)))
    commands.add(DIAGNOSE_ALL, usage=f"{DIAGNOSE_ALL} [NAMESPACE]", summary="all of the above",
                 parse=diagnose_parser(DIAGNOSE_ALL, (ALL,)))
