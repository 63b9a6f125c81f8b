"""Checks as objects: what a check is (``CheckSpec``), what it reads, and the registry that runs them.

A check is a plain function ``(CheckContext) -> list[Finding]`` described with
``@check(name, kinds=..., summary=...)``; the decorator returns a ``CheckSpec``
and registers nothing.  ``kinds`` says which objects the snapshot must hold, so
a live run lists only what the chosen checks read.  Which checks exist, and in
which order they report, is ``commands.catalog.default_checks()``: this
module imports no check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from commands import codes
from commands.cluster.endpoints import EndpointResolver
from commands.cluster.snapshot import Snapshot, SnapshotSource
from commands.errors import MeshbotError, UserError
from commands.findings import READ_PROBLEMS, Finding, by_severity
from commands.preconditions import gate_findings
from commands.thresholds import Thresholds

log = logging.getLogger(__name__)

ALL = "all"
"""What a user types for every check, in report order."""


@dataclass
class CheckContext:
    snapshot: Snapshot
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    namespace: str | None = None
    """Only report on this namespace (the whole snapshot is still read for references)."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    endpoints: EndpointResolver | None = None

    def in_scope(self, namespace: str | None) -> bool:
        return self.namespace is None or namespace == self.namespace


CheckFunction = Callable[[CheckContext], list[Finding]]


@dataclass(frozen=True)
class CheckSpec:
    """One check: its name, the object kinds it reads, a one-line summary, and the function itself."""

    name: str
    function: CheckFunction
    kinds: tuple[str, ...]
    summary: str

    def __call__(self, ctx: CheckContext) -> list[Finding]:
        """Call the check directly (tests, other checks), without the registry's error handling."""
        return self.function(ctx)


def check(name: str, *, kinds: Iterable[str], summary: str) -> Callable[[CheckFunction], CheckSpec]:
    """Describe a check function; the result goes into a ``CheckRegistry`` (see ``catalog``)."""
    def describe(function: CheckFunction) -> CheckSpec:
        return CheckSpec(name, function, tuple(kinds), summary)
    return describe


class CheckRegistry:
    """The checks meshbot can run, in report order; everything that lists checks asks this object."""

    def __init__(self, checks: Iterable[CheckSpec] = ()):
        self._checks: dict[str, CheckSpec] = {}
        for spec in checks:
            self.add(spec)

    def add(self, spec: CheckSpec) -> None:
        if spec.name == ALL or spec.name in self._checks:
            raise ValueError(f"check name {spec.name!r} is taken")
        self._checks[spec.name] = spec

    def names(self) -> tuple[str, ...]:
        """Every check's name, in report order (without ``all``)."""
        return tuple(self._checks)

    def report_order(self) -> tuple[str, ...]:
        """How findings of one level are ordered: what could not be read first, then the checks in order."""
        return (READ_PROBLEMS, *self._checks)

    def markdown_table(self) -> str:
        """The table of checks in docs/codes.md (``meshbot checks --markdown``), in report order."""
        rows = ["| check | what it looks at | objects it reads |", "|---|---|---|"]
        for spec in self:
            kinds = ", ".join(spec.kinds) or "none (endpoints only)"
            rows.append(f"| `{spec.name}` | {spec.summary} | {kinds} |")
        return "\n".join(rows)

    def __iter__(self) -> Iterator[CheckSpec]:
        return iter(self._checks.values())

    def __contains__(self, name: object) -> bool:
        return name in self._checks

    def __getitem__(self, name: str) -> CheckSpec:
        return self._checks[name]

    def resolve(self, requested: Sequence[str]) -> list[str]:
        """``all`` expands to every check; unknown names are a UserError listing the valid ones."""
        names: list[str] = []
        for name in requested:
            for item in self.names() if name == ALL else (name,):
                if item not in self._checks:
                    raise UserError(f"unknown check {item!r}; choose from: {', '.join(self.names())}, {ALL}")
                if item not in names:
                    names.append(item)
        return names

    def kinds_for(self, names: Iterable[str]) -> set[str]:
        return {kind for name in names for kind in self._checks[name].kinds}

    def run(self, name: str, ctx: CheckContext) -> list[Finding]:
        """One check; its own failures become findings so the other checks still report."""
        spec = self._checks[name]
        try:
            return list(spec.function(ctx))
        except MeshbotError as exc:
            return [codes.finding("MB0004", check=name, origin=f"check {name}", check_name=name, reason=str(exc))]
        except Exception as exc:  # a bug must not hide the other checks' findings
            log.exception("check %s failed", name)
            return [codes.finding("MB0005", check=name, origin=f"check {name}", check_name=name,
                                  reason=f"{type(exc).__name__}: {exc}")]

    def diagnose(self, names: Sequence[str], source: SnapshotSource, *, namespace: str | None = None,
                 now: datetime | None = None, thresholds: Thresholds | None = None,
                 endpoints: EndpointResolver | None = None) -> list[Finding]:
        """Read what the checks need from ``source`` once, run them, return findings most severe first.

        Every remediation is then gated against what the same diagnosis found failing
        (``commands.preconditions``): a restart is never offered while the CA, istiod, the injection webhook or
        the revision it depends on is down; the fix of that dependency is offered instead.
        """
        names = self.resolve(names)
        snapshot = source.snapshot(self.kinds_for(names))
        ctx = CheckContext(snapshot=snapshot, now=now or datetime.now(timezone.utc), namespace=namespace,
                           thresholds=thresholds or Thresholds(), endpoints=endpoints)
        findings = list(snapshot.read_problems)
        for name in names:
            findings.extend(self.run(name, ctx))
        return by_severity(gate_findings(findings))
