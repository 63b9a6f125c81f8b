"""What a diagnosis looked at and what it could not: the difference between "nothing wrong" and "not checked".

A green all-clear is only honest when something was read: a namespace with no sidecars, a check that was
skipped or a Prometheus that did not answer must never read as "prod is fine".  ``Coverage`` is built from
the findings themselves (the checks' summary findings count what they scanned; the codes below say what was
not checked), so the CLI, a slash command's thread and an incident's thread state the same verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from commands.findings import Finding, Level

NOT_CHECKED_CODES = frozenset({
    "MB0001", "MB0002", "MB0003", "MB0004", "MB0005",  # the cluster could not be read, or a check did not run
    "MB2010",  # version skew not checked (istiod's version unknown)
    "MB4026", "MB4027",  # Envoy saw no traffic / its host health could not be read
    "MB6001", "MB6002", "MB6003", "MB6004",  # Prometheus absent, down, too large an answer, or without Istio metrics
})
"""Findings that report evidence meshbot could not read: each turns a would-be all-clear into "not checked"."""

MAX_NOT_CHECKED_SHOWN = 3


@dataclass(frozen=True)
class Coverage:
    """What a diagnosis of ``scope`` scanned, which checks ran, what it could not check, and how many problems."""

    scope: str
    scanned: tuple[str, ...]
    """Counted things: ``6 sidecars``, ``7 proxies`` (from status's MB1020 and proxy-status's MB2000)."""
    checks: tuple[str, ...]
    not_checked: tuple[str, ...]
    """One line per kind of missing evidence (same code once, with how many more like it)."""
    problems: int
    """Errors and warnings other than missing evidence."""
    counted: int = 0
    """Sidecars plus proxies."""

    @property
    def something_scanned(self) -> bool:
        """A check ran (status always reads the control plane, so "0 sidecars" in a namespace that exists is a
        scan worth stating), or something was counted.  A namespace that does not exist never gets here: it is
        refused before any check runs (``commands.suggestions.unknown_namespace``)."""
        return self.counted > 0 or bool(self.checks)

    @property
    def all_clear(self) -> bool:
        """True only when something was scanned, everything could be read and nothing is wrong."""
        return not self.problems and not self.not_checked and self.something_scanned

    def scanned_text(self) -> str:
        """``6 sidecars, 7 proxies checked (status, proxy-status)``; the checks alone when nothing was counted."""
        checks = f" ({', '.join(self.checks)})" if self.checks else ""
        if self.scanned:
            return f"{', '.join(self.scanned)} checked{checks}"
        return f"checked: {', '.join(self.checks)}" if self.checks else "nothing was scanned"

    def verdict(self) -> str:
        """The one line that replaces "No problems found": ``prod: 6 sidecars … checked; nothing wrong``, or
        what was not checked.  Without an icon: the CLI prefixes ✔/⚠, Slack its emoji (``all_clear`` says which)."""
        if self.all_clear:
            return f"{self.scope}: {self.scanned_text()}; nothing wrong"
        if not self.something_scanned and not self.problems and not self.not_checked:
            return f"{self.scope}: no check ran, so nothing can be said about it"
        shown = list(self.not_checked[:MAX_NOT_CHECKED_SHOWN])
        more = len(self.not_checked) - len(shown)
        missing = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
        found = "nothing wrong in what was checked" if not self.problems else \
            f"{self.problems} problem{'s' * (self.problems != 1)}"
        return f"{self.scope}: {self.scanned_text()}; {found}" + (f", but NOT checked: {missing}" if missing else "")


def coverage(findings: Sequence[Finding], *, scope: str, checks: Sequence[str] = ()) -> Coverage:
    """The coverage of one diagnosis of ``scope`` (``prod`` or ``all namespaces``) that ran ``checks``."""
    sidecars = sum(int(f.evidence.get("total", 0)) for f in findings if f.code == "MB1020")
    proxies = sum(int(f.evidence.get("proxies", 0)) for f in findings if f.code == "MB2000")
    scanned = [count for count in (_counted(sidecars, "sidecar") if _ran(findings, "MB1020", checks, "status") else "",
                                   _counted(proxies, "proxy") if _ran(findings, "MB2000", checks, "proxy-status")
                                   else "") if count]
    by_code: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        if finding.code in NOT_CHECKED_CODES:
            by_code.setdefault((finding.code, finding.check), []).append(finding)
    not_checked = tuple(same[0].message + (f" (and {len(same) - 1} more like it)" if len(same) > 1 else "")
                        for same in by_code.values())
    problems = sum(1 for f in findings if f.code not in NOT_CHECKED_CODES and f.level is not Level.INFO)
    return Coverage(scope, tuple(scanned), tuple(checks), not_checked, problems, sidecars + proxies)


def _ran(findings: Sequence[Finding], code: str, checks: Sequence[str], check: str) -> bool:
    """The summary exists, or its check ran (was not skipped) and found nothing to count: 0 sidecars is worth
    saying, 0 proxies from a proxy-status that could not reach istiod is not."""
    if any(f.code == code for f in findings):
        return True
    skipped = any(f.code in ("MB0004", "MB0005") and f.check == check for f in findings)
    return check in checks and not skipped


def _counted(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {'proxies' if word == 'proxy' else word + 's'}"
