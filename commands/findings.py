"""What every check returns: typed findings, their levels and their ordering."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Level(StrEnum):
    ERROR = "Error"
    WARNING = "Warning"
    INFO = "Info"

    @property
    def rank(self) -> int:
        """0 for the most severe level, so ``sorted`` puts errors first."""
        return _LEVEL_RANK[self]

    def at_least(self, other: Level) -> bool:
        return self.rank <= other.rank


_LEVEL_RANK = {Level.ERROR: 0, Level.WARNING: 1, Level.INFO: 2}

READ_PROBLEMS = "cluster"
"""The check name of what could not be read from the cluster (MB0001-MB0003): it reports before every check."""


@dataclass(frozen=True)
class Remediation:
    """What a human (or meshbot, after approval) can do about a finding."""

    summary: str
    command: str | None = None
    """The exact command an operator can run by hand."""
    action: str | None = None
    """A meshbot action request (``restart istiod -n istio-system``) that goes through approval."""

    def to_dict(self) -> dict[str, str]:
        out = {"summary": self.summary}
        if self.command:
            out["command"] = self.command
        if self.action:
            out["action"] = self.action
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Remediation:
        return cls(summary=data["summary"], command=data.get("command"), action=data.get("action"))


@dataclass(frozen=True)
class Finding:
    check: str
    code: str
    level: Level
    message: str
    origin: str
    """``Kind namespace/name``, ``Kind name`` for cluster-scoped objects, or an endpoint."""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    remediation: Remediation | None = None
    reference: str | None = None
    """``file:line`` when the object came from a file."""
    documentation_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "check": self.check,
            "code": self.code,
            "level": str(self.level),
            "message": self.message,
            "origin": self.origin,
            "evidence": dict(self.evidence),
        }
        if self.remediation:
            out["remediation"] = self.remediation.to_dict()
        if self.reference:
            out["reference"] = self.reference
        if self.documentation_url:
            out["documentationUrl"] = self.documentation_url
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        remediation = data.get("remediation")
        return cls(
            check=data["check"],
            code=data["code"],
            level=Level(data["level"]),
            message=data["message"],
            origin=data["origin"],
            evidence=dict(data.get("evidence") or {}),
            remediation=Remediation.from_dict(remediation) if remediation else None,
            reference=data.get("reference"),
            documentation_url=data.get("documentationUrl"),
        )


def by_severity(findings: Iterable[Finding], check_order: Sequence[str] | None = None) -> list[Finding]:
    """Most severe first; within a level by check, then code, origin and message.

    ``check_order`` (``CheckRegistry.report_order()``: control-plane checks first, since their trouble usually
    explains the rest) orders the checks; the registry sorts every diagnosis with it.  Without it the checks of
    a level keep the order they arrive in, so a diagnosis re-sorted downstream keeps the registry's order.
    """
    findings = list(findings)
    if check_order is None:
        arrival = {(f.level, f.check): index for index, f in reversed(list(enumerate(findings)))}
        return sorted(findings, key=lambda f: (f.level.rank, arrival[f.level, f.check], f.code, f.origin, f.message))
    rank = {name: index for index, name in enumerate(check_order)}
    return sorted(findings, key=lambda f: (f.level.rank, rank.get(f.check, len(rank)), f.check, f.code, f.origin,
                                           f.message))


def count_by_level(findings: Iterable[Finding]) -> dict[Level, int]:
    counts = Counter(f.level for f in findings)
    return {level: counts.get(level, 0) for level in Level}


def worst_level(findings: Iterable[Finding]) -> Level | None:
    levels = [f.level for f in findings]
    return min(levels, key=lambda lv: lv.rank) if levels else None
