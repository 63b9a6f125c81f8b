"""``/mesh …`` text -> a typed request, and the registry that says what each sub-command does.

``SlashCommands`` is the registry: one ``add`` per sub-command carries its
usage, summary, parser, handler, the permission its author needs and whether
it runs on the worker pool.  ``bot.server.wiring`` hands the one registry to
every feature's ``register``; ``/mesh help``, the role check in
``bot.slack.app`` and the table in docs/mesh-commands.md all read it.
Parsing is pure (no Slack, no cluster): anything wrong with the text raises
``UsageError``, whose message is shown to the user (ephemerally) with the usage lines.
A request that names a namespace is checked against the cluster just before its
handler runs (``refuse_unknown_namespaces``): a typo is answered to its author
alone, before the handler posts anything in the channel (issue 27).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bot.slack.roles import Permission
from commands.checks.registry import ALL, CheckRegistry
from commands.errors import UserError
from commands.suggestions import did_you_mean, unknown_namespace
from commands.validation import namespace_problem


class UsageError(UserError):
    """The slash-command text is wrong; the message says what and how to fix it."""


class UnknownSubcommand(UsageError):
    """No sub-command has that name: the answer is the closest names, not the whole help (issue 27)."""


class UnknownNamespace(UserError):
    """The namespace a request names does not exist: its author alone is told, with the closest names, and
    nothing is posted in the channel (a public "not run" is noise in an incident channel at 3 AM, issue 27)."""


@runtime_checkable
class NamesANamespace(Protocol):
    """A request about one namespace (``DiagnoseRequest``, the timeline's); ``None``: the whole mesh."""

    @property
    def namespace(self) -> str | None: ...


@dataclass(frozen=True)
class HelpRequest:
    topic: str | None = None


Parser = Callable[[list[str], str], Any]
"""(words after the subcommand, the raw rest of the text) -> request."""
Handler = Callable[[Any, Any], None]
"""(``bot.slack.app.Invocation``: who asked, the parsed request): raises for the user to read."""
RefusedCommand = Callable[[str, str, Any, str], None]
"""(user, channel, the parsed request, reason): audits a ``/mesh`` command its author may not run."""
NamespaceLister = Callable[[], "Collection[str] | None"]
"""() -> the namespaces that exist; None when they cannot be listed or an absence cannot be vouched for (nothing is
refused then: the diagnosis itself says what it could not read)."""


@dataclass(frozen=True)
class PermissionWhen:
    """``permission`` for the requests ``applies`` selects (``case`` names them in the docs); DIAGNOSE for the rest."""

    permission: Permission
    applies: Callable[[Any], bool]
    case: str


@dataclass(frozen=True)
class Subcommand:
    name: str
    usage: str
    summary: str
    parse: Parser
    handle: Handler | None
    """None only for ``help``, which the app answers itself with ``help_text``."""
    permission: Permission | PermissionWhen = Permission.DIAGNOSE
    background: bool = False
    """True: the handler runs on the worker pool (cluster reads, planning); False: on the messenger pool,
    which only talks to Slack and so answers at once even when every worker is busy."""
    listed_as: tuple[str, str] | None = None
    """(usage, summary) of the one row the docs table shows for a family of sub-commands, e.g. one per check:
    the checks have their own generated table, so adding a check leaves docs/mesh-commands.md unchanged."""

    def permission_for(self, request: Any) -> Permission:
        rule = self.permission
        if isinstance(rule, Permission):
            return rule
        return rule.permission if rule.applies(request) else Permission.DIAGNOSE

    def who_may(self) -> str:
        """The permission in words, as the docs table shows it."""
        if self.handle is None:
            return "anyone in an allowed channel"
        rule = self.permission
        if isinstance(rule, Permission):
            return str(rule)
        return f"{rule.permission} for {rule.case}, else {Permission.DIAGNOSE}"

    def runs_on(self) -> str:
        if self.handle is None:
            return "the request thread (the answer is the ack)"
        return "worker pool" if self.background else "messenger pool"


@dataclass(frozen=True)
class Command:
    """A parsed ``/mesh`` line: which sub-command, and its typed request."""

    subcommand: Subcommand
    request: Any

    @property
    def permission(self) -> Permission:
        return self.subcommand.permission_for(self.request)


class SlashCommands:
    """The ``/mesh`` subcommands, in the order ``help`` lists them (``help`` itself first)."""

    def __init__(self) -> None:
        self._subcommands: dict[str, Subcommand] = {}
        self._refusal_audits: list[RefusedCommand] = []
        self._namespaces: NamespaceLister | None = None
        self.add("help", usage="help", summary="this list", parse=_help, handle=None)

    def add(self, name: str, *, usage: str, summary: str, parse: Parser, handle: Handler | None,
            permission: Permission | PermissionWhen = Permission.DIAGNOSE, background: bool = False,
            listed_as: tuple[str, str] | None = None) -> None:
        """Register ``/mesh name``: everything about it in one call (see ``Subcommand`` for the fields)."""
        if name in self._subcommands:
            raise ValueError(f"/mesh {name} is registered twice")
        if handle is None and self._subcommands:
            raise ValueError(f"/mesh {name} needs a handler")
        checked = self._checking_namespace(handle) if handle is not None else None
        self._subcommands[name] = Subcommand(name, usage, summary, parse, checked, permission, background,
                                             listed_as)

    def refuse_unknown_namespaces(self, namespaces: NamespaceLister) -> None:
        """Before the handler of every request that names a namespace, in the handler's own pool (``namespaces``
        may read the cluster, which the ack path must not), a namespace not among ``namespaces()`` raises
        ``UnknownNamespace``, which ``bot.slack.app`` answers privately: no "Running…" is posted for a typo."""
        self._namespaces = namespaces

    def _checking_namespace(self, handle: Handler) -> Handler:
        @functools.wraps(handle)
        def checked(who: Any, request: Any) -> None:
            self.refuse_unknown_namespace(request)
            handle(who, request)
        return checked

    def refuse_unknown_namespace(self, request: Any) -> None:
        """Raises ``UnknownNamespace`` when ``request`` names a namespace that the cluster does not list."""
        namespace = request.namespace if isinstance(request, NamesANamespace) else None
        if namespace is None or self._namespaces is None:
            return
        refusal = unknown_namespace(namespace, self._namespaces() or ())
        if refusal:
            raise UnknownNamespace(refusal)

    def audit_refused(self, audit: RefusedCommand) -> None:
        """``audit`` records each command refused for want of a role (the incident log does)."""
        self._refusal_audits.append(audit)

    def refused(self, user: str, channel: str, request: Any, reason: str) -> None:
        for audit in self._refusal_audits:
            audit(user, channel, request, reason)

    def __iter__(self) -> Iterator[Subcommand]:
        return iter(self._subcommands.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._subcommands)

    def command(self, text: str) -> Command:
        """The sub-command and request for ``/mesh <text>``; empty text is ``help``."""
        words = text.split()
        if not words:
            return Command(self._subcommands["help"], HelpRequest())
        name, rest = words[0].lower(), text.strip()[len(words[0]):].strip()
        spec = self._subcommands.get(name)
        if spec is None:
            raise UnknownSubcommand(f"unknown subcommand `{words[0][:40]}`."
                                    f"{did_you_mean(name[:40], self._subcommands)} `/mesh help` lists them all.")
        return Command(spec, spec.parse(words[1:], rest))

    def parse(self, text: str) -> Any:
        """The request for ``/mesh <text>``."""
        return self.command(text).request

    def help_text(self) -> str:
        lines = ["*meshbot* \u2014 service-mesh diagnostics and approved remediations", ""]
        lines += [f"`/mesh {spec.usage}` \u2014 {spec.summary}" for spec in self._subcommands.values()]
        return "\n".join(lines)

    def markdown_table(self) -> str:
        """The table in docs/mesh-commands.md (who may run each sub-command, and where it runs)."""
        rows = ["| command | what it does | permission | runs on |", "|---|---|---|---|"]
        for spec in self._subcommands.values():
            usage, summary = spec.listed_as or (spec.usage, spec.summary)
            usage = usage.replace("|", "\\|")  # a table cell ends at a bare pipe, also inside code
            row = f"| `/mesh {usage}` | {summary} | {spec.who_may()} | {spec.runs_on()} |"
            if row not in rows:
                rows.append(row)
        return "\n".join(rows)


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
ONE_CHECK = ("CHECK [NAMESPACE]", "one check by name, e.g. `/mesh certs prod`; the checks are listed in "
                                  "[codes.md](codes.md#checks) and by `/mesh help`")


def diagnose_parser(label: str, checks: tuple[str, ...]) -> Parser:
    usage = f"{label} [NAMESPACE]"

    def parse_diagnose(words: list[str], rest: str) -> DiagnoseRequest:
        expect_at_most(words, 1, usage)
        if words and "/" in words[0]:
            # `prod/chekout`: checks read whole namespaces; say so rather than "not a valid namespace name".
            typed, _, workload = words[0].partition("/")
            raise UsageError(f"`/mesh {label}` takes a namespace, not a workload: `/mesh {label} "
                             f"{typed[:63]}` checks every workload there, `{workload[:63]}` included if it "
                             "exists (its findings name it).")
        namespace = namespace_argument(words[0]) if words else None
        return DiagnoseRequest(label=label, checks=checks, namespace=namespace)
    return parse_diagnose


def add_diagnoses(commands: SlashCommands, checks: CheckRegistry, handle: Handler) -> None:
    """One subcommand per check (its summary from the check), then ``diagnose`` for all of them.

    ``handle`` posts "Running…" and hands the diagnosis to the worker pool itself, so the sub-commands run on
    the messenger pool (``background=False``): the message appears at once even when every worker is busy.
    The registry's namespace check runs before it, so a typo'd namespace is never posted (issue 27)."""
    for spec in checks:
        commands.add(spec.name, usage=f"{spec.name} [NAMESPACE]", summary=spec.summary,
                     parse=diagnose_parser(spec.name, (spec.name,)), handle=handle, listed_as=ONE_CHECK)
    commands.add(DIAGNOSE_ALL, usage=f"{DIAGNOSE_ALL} [NAMESPACE]", summary="all of the above",
                 parse=diagnose_parser(DIAGNOSE_ALL, (ALL,)), handle=handle)
