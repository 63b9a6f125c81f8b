"""Playbooks: what maps an Alertmanager alert to diagnostics and suggested remediations.

The model (``Playbook``, ``Matcher``, ``RemediationRule``…), which playbook an alert
matches, and which remediations a playbook suggests for a set of findings.  Reading
and checking the YAML files in ``playbooks/`` is ``bot.incidents.playbook_loader``'s job.
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from commands.actions.targets import ActionTarget, ActionUsageError, parse_action
from commands.errors import InputError
from commands.explanations import namespace_of, workload_of
from commands.findings import Finding, Remediation, by_severity
from commands.preconditions import MeshHealth
from commands.triage import Cause
from commands.validation import is_dns1123_subdomain, namespace_problem

log = logging.getLogger(__name__)

FROM_FINDING = "from-finding"
MATCH_OPS = ("=", "!=", "=~", "!~")
PLACEHOLDERS = ("namespace", "pod")


class PlaybookError(InputError):
    """A playbook file (or the directory) is invalid; the message is ``path:line: reason``."""


def is_namespace(value: str) -> bool:
    return namespace_problem(value) is None


def is_object_name(value: str) -> bool:
    """A DNS-1123 subdomain (pod and Deployment names)."""
    return is_dns1123_subdomain(value)


# -- actions ------------------------------------------------------------------------------

def meshbot_action(action: str) -> ActionTarget | None:
    """``action`` read by meshbot's one action grammar (``commands.actions.targets``), or None if it is not one.

    Playbooks, ``/mesh`` and the suggestion buttons all parse through ``parse_action``, so a
    playbook can suggest exactly what a person could type, and nothing else.
    """
    try:
        return parse_action(action.split())
    except ActionUsageError:
        return None


def template_placeholders(template: str) -> tuple[str, ...]:
    """The ``{name}`` fields of an action template; ValueError for anything but bare known names."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        raise ValueError("unbalanced { or } (placeholders are {namespace} and {pod})") from None
    names: list[str] = []
    for _literal, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            raise ValueError(f"unknown placeholder {{{name}}}; use {{namespace}} or {{pod}}")
        if name not in names:
            names.append(name)
    return tuple(names)


# -- matching alerts ----------------------------------------------------------------------

_MATCHER_TEXT = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\"|[^\s\"]*)\s*$")


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager-style label matcher; a missing label matches as the empty string."""

    label: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.op not in MATCH_OPS:
            raise ValueError(f"unknown matcher operator {self.op!r}; use one of {', '.join(MATCH_OPS)}")
        if self.op in ("=~", "!~"):
            object.__setattr__(self, "_regex", re.compile(self.value))

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """``severity="critical"``, ``pod=~"istio-.*"``; ValueError (or re.error) when it is not one."""
        found = _MATCHER_TEXT.match(text)
        if not found:
            raise ValueError(f"{text!r} is not a matcher; write label=\"value\" with one of "
                             f"{', '.join(MATCH_OPS)}")
        label, op, raw = found.groups()
        value = json.loads(raw) if raw.startswith('"') else raw
        return cls(label, op, value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        # Alertmanager anchors regexes at both ends.
        found = self._regex is not None and self._regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.label}{self.op}{json.dumps(self.value)}"


def namespace_from(labels: Mapping[str, str], label: str | None, fixed: str | None) -> str | None:
    """The label's value when it is a valid namespace, else ``fixed`` (None means every namespace)."""
    value = labels.get(label) if label else None
    if isinstance(value, str) and is_namespace(value):
        return value
    return fixed


def pod_from(labels: Mapping[str, str], label: str | None) -> str | None:
    value = labels.get(label) if label else None
    return value if isinstance(value, str) and is_object_name(value) else None


def finding_namespace(finding: Finding) -> str | None:
    """The namespace a finding is about (``Pod prod/x``, ``ConfigMap legacy/…``, ``Namespace prod``), if valid."""
    value = namespace_of(finding)
    return value if value and is_namespace(value) else None


def finding_workload(finding: Finding) -> str | None:
    """The Deployment behind a finding about one of its pods (actions act on Deployments, not pods)."""
    found = workload_of(finding)
    return found[1] if found and is_object_name(found[1]) else None


@dataclass(frozen=True)
class DiagnosticStep:
    check: str
    namespace: str | None = None
    namespace_label: str | None = None
    pod_label: str | None = None

    def namespace_for(self, labels: Mapping[str, str]) -> str | None:
        """The alert's namespace label if valid, else the fixed namespace, else None (all namespaces)."""
        return namespace_from(labels, self.namespace_label, self.namespace)

    def pod_for(self, labels: Mapping[str, str]) -> str | None:
        return pod_from(labels, self.pod_label)


@dataclass(frozen=True)
class RemediationRule:
    codes: tuple[str, ...]
    action: str | None
    """An action template, ``from-finding``, or None for advice only."""
    title: str
    advice: str | None
    namespace: str | None = None
    namespace_label: str | None = None
    pod_label: str | None = None
    """Where ``{namespace}`` and ``{pod}`` come from: the same rules as a DiagnosticStep."""
    message_pattern: str | None = None
    """Only findings whose message this regex finds something in (``re.search``)."""

    def applies_to(self, finding: Finding) -> bool:
        if finding.code not in self.codes:
            return False
        return self.message_pattern is None or re.search(self.message_pattern, finding.message) is not None

    def action_for(self, finding: Finding, labels: Mapping[str, str]) -> str | None:
        """The concrete action for this finding and alert, or None when no safe one can be built."""
        if self.action is None:
            return None
        if self.action == FROM_FINDING:
            action = finding.remediation.action if finding.remediation else None
        else:
            action = self._filled(finding, labels)
        if action and meshbot_action(action) is None:
            log.warning("playbook action %r (for %s) is not a meshbot action; not suggested", action, finding.code)
            return None
        return " ".join(action.split()) if action else action

    def _filled(self, finding: Finding, labels: Mapping[str, str]) -> str | None:
        """The template with ``{namespace}``/``{pod}`` taken from the finding that triggered it, and only when
        the finding names none, from the alert's labels: a root mismatch in ``legacy`` found while
        diagnosing an alert about ``istio-system`` must suggest acting on ``legacy``."""
        if self.action is None:
            return None
        # {pod} names the workload an action acts on: a label the rule names explicitly (pod_label) knows
        # the Deployment; a pod's own name only lets us guess it from the ReplicaSet naming scheme.
        values = {"namespace": finding_namespace(finding) or namespace_from(labels, self.namespace_label,
                                                                              self.namespace),
                  "pod": pod_from(labels, self.pod_label) or finding_workload(finding)}
        needed = template_placeholders(self.action)
        if any(values[name] is None for name in needed):
            return None
        return self.action.format(**{name: values[name] for name in needed})


@dataclass(frozen=True)
class Playbook:
    name: str
    description: str
    alertname: str | None
    matchers: tuple[Matcher, ...]
    diagnostics: tuple[DiagnosticStep, ...]
    remediations: tuple[RemediationRule, ...]
    fallback: bool
    source: str
    """``file:line`` where the playbook starts."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        """The fallback matches every alert; any other needs its alertname and every matcher."""
        if self.fallback:
            return True
        return labels.get("alertname") == self.alertname and all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True)
class PlaybookSet:
    playbooks: tuple[Playbook, ...]

    def __post_init__(self) -> None:
        fallbacks = [p.name for p in self.playbooks if p.fallback]
        if len(fallbacks) != 1:
            raise ValueError(f"a PlaybookSet needs exactly one fallback playbook, got {fallbacks or 'none'}")

    @property
    def fallback(self) -> Playbook:
        return next(p for p in self.playbooks if p.fallback)

    def match(self, labels: Mapping[str, str]) -> Playbook:
        """The matching playbook with the most matchers (ties: file order), else the fallback."""
        candidates = [p for p in self.playbooks if not p.fallback and p.matches(labels)]
        if not candidates:
            return self.fallback
        return max(candidates, key=lambda p: len(p.matchers))  # max keeps the first of equals

    def get(self, name: str) -> Playbook | None:
        return next((p for p in self.playbooks if p.name == name), None)


# -- suggestions --------------------------------------------------------------------------

@dataclass(frozen=True)
class SuggestedRemediation:
    title: str
    action: str | None
    advice: str | None
    codes: tuple[str, ...]
    """The finding codes that led to it."""
    origins: tuple[str, ...]
    """The findings' origins (``Pod prod/payment-7d9f``)."""


@dataclass
class _Draft:
    title: str
    action: str | None
    advice: str | None
    codes: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        if finding.code not in self.codes:
            self.codes.append(finding.code)
        if finding.origin not in self.origins:
            self.origins.append(finding.origin)

    def freeze(self) -> SuggestedRemediation:
        return SuggestedRemediation(self.title, self.action, self.advice, tuple(self.codes), tuple(self.origins))


def suggest(playbook: Playbook, findings: Sequence[Finding], labels: Mapping[str, str]) -> list[SuggestedRemediation]:
    """The playbook's remediations that the findings call for, most severe finding first.

    One suggestion per distinct action (advice-only ones: per title).  A rule with an
    action whose placeholders cannot be filled with valid names, or whose finding has no
    action, suggests nothing: a guessed action is worse than none.
    """
    drafts: dict[tuple[str, str], _Draft] = {}
    for finding in by_severity(findings):
        for rule in playbook.remediations:
            if not rule.applies_to(finding):
                continue
            action = rule.action_for(finding, labels)
            if rule.action is not None and action is None:
                continue
            key = ("action", action) if action else ("title", rule.title)
            draft = drafts.setdefault(key, _Draft(rule.title, action, rule.advice))
            draft.add(finding)
    health = MeshHealth.from_findings(findings)
    return [_gated(draft.freeze(), health) for draft in drafts.values()]


def _gated(suggestion: SuggestedRemediation, health: MeshHealth) -> SuggestedRemediation:
    """A suggested action whose dependency the same diagnosis shows failing becomes advice without a button:
    the fix of that dependency first (commands.preconditions).  A suggestion never waits on its own findings
    (istiod's restart does not wait for istiod)."""
    if not suggestion.action:
        return suggestion
    step = Remediation(suggestion.title, action=suggestion.action)
    blocking = [b for b in health.blockers(step) if b.finding.origin not in suggestion.origins]
    if not blocking:
        return suggestion
    first = blocking[0]
    fix = first.finding.remediation
    then = suggestion.advice or suggestion.title
    advice = (f"Not yet: {first.reason} ({first.finding.message.rstrip('.')}). First: "
              f"{fix.command or fix.summary if fix else 'fix that'}. Then: {then}")
    return SuggestedRemediation(f"{suggestion.title} (waits on {first.dependency})", None, advice,
                                suggestion.codes, suggestion.origins)


def with_first_step(cause: Cause | None, suggestions: list[SuggestedRemediation]) -> list[SuggestedRemediation]:
    """``suggestions`` with the probable cause's first step first, when it is a meshbot action.

    The top message's button and the thread's buttons point into this one list (``INCIDENT:INDEX``), so the
    first step is index 0 whichever message it is pressed in.
    """
    step = cause.first_step if cause else None
    action = " ".join(step.action.split()) if step and step.action else None
    if cause is None or step is None or action is None or meshbot_action(action) is None:
        return suggestions
    first = next((s for s in suggestions if s.action == action), None) or SuggestedRemediation(
        title="First step for the probable cause", action=action, advice=step.summary, codes=(cause.finding.code,),
        origins=(cause.finding.origin,))
    return [first, *(s for s in suggestions if s is not first)]
