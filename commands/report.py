"""Findings as text and JSON for the command line (Slack rendering lives in ``bot/blocks.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from commands.coverage import Coverage, coverage
from commands.findings import Finding, Level, Remediation, by_severity, count_by_level
from commands.triage import ORDERING, Cause, Triage, triage

# Findings that summarise a whole check; printed before the severity-sorted list.
SUMMARY_CODES = frozenset({"MB2000", "MB1020"})


def split_summary(findings: Iterable[Finding]) -> tuple[list[Finding], list[Finding]]:
    """(summary findings, the rest most severe first)."""
    summaries: list[Finding] = []
    rest: list[Finding] = []
    for finding in findings:
        (summaries if finding.code in SUMMARY_CODES else rest).append(finding)
    return summaries, by_severity(rest)


def report_order(findings: Iterable[Finding]) -> list[Finding]:
    summaries, rest = split_summary(findings)
    return summaries + rest


def counts_line(findings: Sequence[Finding]) -> str:
    counts = count_by_level(findings)
    parts = [f"{counts[Level.ERROR]} error{'s' * (counts[Level.ERROR] != 1)}",
             f"{counts[Level.WARNING]} warning{'s' * (counts[Level.WARNING] != 1)}",
             f"{counts[Level.INFO]} info"]
    return ", ".join(parts)


READ_ONLY_VERBS = {
    "kubectl": frozenset({"get", "describe", "logs", "top", "explain", "auth", "events", "api-resources", "version"}),
    "istioctl": frozenset({"proxy-status", "proxy-config", "analyze", "x", "version", "experimental"}),
}
"""Commands that only look (kubectl's read verbs, istioctl's inspection commands): a next step, never a "Fix"."""
_OPTIONS_WITH_VALUES = frozenset({"-n", "--namespace", "--context", "-c", "--container", "-l", "--selector", "-o"})


def changes_something(command: str) -> bool:
    """True for a command that changes the cluster (``kubectl set resources …``), False for one that only reads
    (``kubectl -n prod logs … | grep``, ``istioctl proxy-status``) or is not a known tool's."""
    words = command.split("|", 1)[0].split()
    if not words or words[0] not in READ_ONLY_VERBS:
        return False
    skip = False
    for word in words[1:]:
        if skip:
            skip = False
        elif word in _OPTIONS_WITH_VALUES:
            skip = True
        elif not word.startswith("-"):
            return word not in READ_ONLY_VERBS[words[0]]
    return False


def remediation_label(finding: Finding) -> str:
    """``Fix`` only for a command that fixes; ``Waits on X`` when a dependency must be fixed first (gated by
    ``commands.preconditions``); ``Next step`` for advice or a command that only looks (issue 27: "run the
    check again in a minute" is no fix)."""
    blocked_by = finding.evidence.get("blocked_by")
    if blocked_by:
        return f"Waits on {', '.join(blocked_by)}"
    remediation = finding.remediation
    if remediation is not None and remediation.command and changes_something(remediation.command):
        return "Fix"
    return "Next step"


def finding_line(finding: Finding, *, with_fix: bool = True) -> str:
    """``Error [IST0101] (VirtualService ns/name file.yaml:12) message`` — istioctl's layout."""
    where = f"{finding.origin} {finding.reference}" if finding.reference else finding.origin
    line = f"{finding.level} [{finding.code}] ({where}) {finding.message}"
    remediation = finding.remediation
    if with_fix and remediation:
        label = remediation_label(finding)
        if label == "Fix":
            line += f" Fix: {remediation.command}"
        elif label.startswith("Waits on"):
            # What to run first is not this finding's fix, so it is not "Fix:".
            line += f" {label}: {remediation.summary}"
        else:
            line += f" Next step: {remediation.summary}" + (f" ({remediation.command})" if remediation.command else "")
    return line


def step_text(step: Remediation) -> str:
    """A first step as one line: the meshbot action (which needs approval) or the command, then why."""
    if step.action:
        return f"/mesh {step.action} \u2014 {step.summary}"
    if step.command:
        return f"{step.command} \u2014 {step.summary}"
    return step.summary


def triage_lines(result: Triage) -> list[str]:
    chains = [c for c in result.causes if c.is_chain]
    lone = [c for c in result.causes if not c.is_chain]
    lines: list[str] = []
    if chains:
        lines.append(f"Probable causes, {ORDERING}:")
    for number, cause in enumerate(chains, 1):
        lines.append(f"{number}. [{cause.confidence} confidence] {cause.title} \u2014 {cause.explains_line}")
        lines += [f"   because {reason}" for reason in cause.reasons]
        if cause.first_step:
            lines.append(f"   first step: {step_text(cause.first_step)}")
    if lone:
        lines.append("Other errors, not explained by the above:" if chains else "Errors, none explaining another:")
        lines += _lone_lines(lone)
    return lines + [""] if lines else []


def _lone_lines(lone: Sequence[Cause]) -> list[str]:
    """One line per distinct error.  Istio reports some problems once per resource involved, with the same
    text (IST0109 names both conflicting VirtualServices on each of them): one line, naming where each is."""
    by_title: dict[str, list[Cause]] = {}
    for cause in lone:
        by_title.setdefault(cause.title, []).append(cause)
    return [f"- {title}" + (f" ({len(same)} findings: {', '.join(c.finding.origin for c in same)})"
                            if len(same) > 1 else "")
            for title, same in by_title.items()]


def verdict_line(seen: Coverage) -> str:
    """``✔ prod: 6 sidecars, 7 proxies checked (…); nothing wrong``, or ``⚠ …`` saying what was not checked."""
    icon = "\u2714" if seen.all_clear else "\u26a0"
    return f"{icon} {seen.verdict()}"


def diagnose_text(findings: Sequence[Finding], *, title: str, scope: str = "all namespaces",
                  checks: Sequence[str] = ()) -> str:
    """The CLI's report: summary, triage, every finding; ✔ only when something was scanned and all was read."""
    summaries, rest = split_summary(findings)
    seen = coverage(findings, scope=scope, checks=checks)
    lines = [title, f"Summary: {counts_line(findings)}"]
    lines += [f"  {f.check}: {f.message}" for f in summaries]
    lines.append("")
    lines += triage_lines(triage(rest))
    lines += [finding_line(f) for f in rest]
    if not seen.problems or seen.not_checked:
        lines.append(verdict_line(seen))
    return "\n".join(lines) + "\n"


def diagnose_json(findings: Sequence[Finding]) -> str:
    """``triage`` (probable causes, most explaining first) next to every finding in report order."""
    _, rest = split_summary(findings)
    return json.dumps({"triage": triage(rest).to_list(),
                       "findings": [f.to_dict() for f in report_order(findings)]}, indent=2) + "\n"


def analyze_text(findings: Sequence[Finding], *, namespace: str | None) -> str:
    if not findings:
        scope = f"namespace: {namespace}" if namespace else "all namespaces"
        return f"\u2714 No validation issues found when analyzing {scope}.\n"
    return "\n".join(finding_line(f, with_fix=False) for f in by_severity(findings)) + "\n"


def analyze_json(findings: Sequence[Finding]) -> str:
    """istioctl's ``-o json``: an array of {code, documentationUrl, level, message, origin, reference}."""
    items: list[dict[str, Any]] = []
    for f in by_severity(findings):
        item = {"code": f.code, "documentationUrl": f.documentation_url or "", "level": str(f.level),
                "message": f.message, "origin": f.origin}
        if f.reference:
            item["reference"] = f.reference
        items.append(item)
    return json.dumps(items, indent=2) + "\n"
