"""Findings -> probable causes, each with what it explains, how sure we are and the first safe step.

Pure: no cluster, no Slack.  Rules are edges "finding A explains finding B, because …"; a cause is
a finding that explains others (directly or through a chain: an expired root makes sidecars fail
SDS, which makes their callers see 503s) and is itself explained by nothing.  Errors that nothing
explains become causes of their own, so independent problems stay separate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from commands.explanations import (
    ROOT_EXPIRED,
    ROOT_MISMATCH,
    RULES,
    Confidence,
    Link,
    Rule,
    is_istiod,
    namespace_of,
    upstream_of,
)
from commands.findings import Finding, Level, Remediation, by_severity
from commands.preconditions import MeshHealth, gate

ORDERING = ("what the other steps wait on first, then the one explaining most errors, then (with a timeline) the one "
            "changed closest before the errors began")
"""How causes are ordered, in the words every rendering uses (CLI, thread, top message, JSON).  Time only breaks
ties between causes of equal impact: a change minutes before the onset is evidence, not a dependency."""


@dataclass(frozen=True)
class Cause:
    key: str
    """Stable identity of the problem (rule + code + object): two alert groups with the same key are one outage."""
    title: str
    finding: Finding
    explains: tuple[Finding, ...]
    reasons: tuple[str, ...]
    confidence: Confidence
    first_step: Remediation | None
    errors_total: int
    """Errors in the whole diagnosis, for "explains 9 of 13 errors"."""
    unblocks: tuple[str, ...] = ()
    """Keys of the causes whose first step cannot work until this one is fixed (it is ordered before them)."""
    time_score: float = 0.0
    """0-1: how strongly a change shortly before the onset on the failing edges ties to this cause (``with_timing``)."""
    timing: str | None = None
    """That change in words: "AuthorizationPolicy shop/deny-all applied by argocd 2 minutes before 403s began from
    frontend to payments"."""

    @property
    def is_chain(self) -> bool:
        """True when this cause explains other findings (not just a lone error)."""
        return bool(self.explains)

    @property
    def explained_errors(self) -> int:
        return sum(1 for f in (self.finding, *self.explains) if f.level == Level.ERROR)

    @property
    def explains_line(self) -> str:
        others = len(self.explains)
        if not others:
            return "explains no other finding"
        noun = "finding" if others == 1 else "findings"
        return (f"explains {self.explained_errors} of {self.errors_total} error"
                f"{'s' * (self.errors_total != 1)} ({others} other {noun})")

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "title": self.title,
            "confidence": str(self.confidence),
            "explains": self.explains_line,
            "because": list(self.reasons),
            "finding": {"code": self.finding.code, "origin": self.finding.origin},
            "explained": [{"code": f.code, "origin": f.origin} for f in self.explains],
            "first_step": self.first_step.to_dict() if self.first_step else None,
            "unblocks": list(self.unblocks),
            **({"timing": self.timing, "time_score": round(self.time_score, 3)} if self.timing else {}),
        }


@dataclass(frozen=True)
class Triage:
    causes: tuple[Cause, ...]
    findings: tuple[Finding, ...] = field(repr=False)

    @property
    def top(self) -> Cause | None:
        return self.causes[0] if self.causes else None

    def cause_of(self, finding: Finding) -> Cause | None:
        for cause in self.causes:
            if finding == cause.finding or finding in cause.explains:
                return cause
        return None

    def to_list(self) -> list[dict]:
        return [c.to_dict() for c in self.causes]


# -- first safe steps ----------------------------------------------------------------------------

def first_step(cause: Finding, explained: Sequence[Finding]) -> Remediation | None:
    """What to do first for ``cause``: restore service safely, then fix the cause."""
    if cause.code in ROOT_EXPIRED | ROOT_MISMATCH:
        mismatch = cause.code in ROOT_MISMATCH
        namespace = namespace_of(cause) if mismatch else _most_affected_namespace(explained)
        if namespace and namespace != "istio-system":
            # Plaintext between meshed workloads needs both halves: PERMISSIVE servers and clients told to
            # send plaintext (the permissive-mtls plan carries both; istio.io authn-policy "auto mutual TLS").
            # Then the real fix: istiod's namespace controller rewrites a namespace's istio-ca-root-cert
            # (pilot/pkg/serviceregistry/kube/controller/namespacecontroller.go); an expiring self-signed
            # root is renewed from its existing key (security/pkg/pki/ca/selfsignedcarootcertrotator.go).
            then = ("let istiod rewrite the namespace's istio-ca-root-cert and restart the workloads there"
                    if mismatch else "rotate the root in place (never delete istio-ca-secret)")
            return Remediation(
                summary=f"Restore traffic in {namespace} first: accept and send plaintext there (needs approval); "
                        f"then {then}",
                action=f"permissive-mtls {namespace}")
    if cause.code == "MB1002" and is_istiod(cause):
        # A restart OOMs again with the same limit; raise it first (Istio's chart: pilot.resources).
        command = (cause.remediation.command if cause.remediation and cause.remediation.command
                   else "kubectl -n istio-system set resources deployment/istiod -c discovery --limits=memory=4Gi")
        return Remediation(
            summary="istiod runs out of memory: raise its memory limit (a restart alone OOMs again), then watch "
                    "it become Ready", command=command)
    return cause.remediation


def _most_affected_namespace(findings: Sequence[Finding]) -> str | None:
    counts: dict[str, int] = {}
    for finding in findings:
        ns = (upstream_of(finding) or (namespace_of(finding), ""))[0]
        if ns:
            counts[ns] = counts.get(ns, 0) + (2 if finding.level == Level.ERROR else 1)
    return max(sorted(counts), key=lambda ns: counts[ns]) if counts else None


# -- putting it together -------------------------------------------------------------------------

def triage(findings: Sequence[Finding], rules: Sequence[Rule] = RULES) -> Triage:
    """Probable causes: what the other steps wait on first, then the one explaining most errors (``ORDERING``).

    A cause's first step is gated by ``commands.preconditions``: a step whose dependency (istiod, the CA, the
    injection webhook, the revision) another cause shows failing becomes "fix that first", and the cause it
    waits on is ordered before it, so the first step on top is the first one that can take effect.
    """
    findings = by_severity(findings)
    links = [link for rule in rules for link in rule(findings)]
    effects: dict[int, list[Link]] = {}
    for link in links:
        if link.cause is not link.effect:
            effects.setdefault(id(link.cause), []).append(link)
    explained_ids = {id(link.effect) for link in links}
    errors_total = sum(1 for f in findings if f.level == Level.ERROR)
    health = MeshHealth.from_findings(findings)
    candidates: list[tuple[Finding, tuple[Finding, ...], Remediation | None]] = []
    for finding in findings:
        if id(finding) in explained_ids:
            continue
        if id(finding) not in effects and finding.level != Level.ERROR:
            continue
        reached = _reach(finding, effects)
        explained = tuple(f for f in findings if id(f) in reached)
        candidates.append((finding, explained, first_step(finding, explained)))
    waits = _waits_on(candidates, health)
    causes = []
    for finding, explained, step in candidates:
        reasons = tuple(dict.fromkeys(link.why for link in _links_from(finding, effects)))
        causes.append(Cause(
            key=_key(finding),
            title=finding.message,
            finding=finding,
            explains=explained,
            reasons=reasons,
            confidence=_confidence(finding, effects),
            first_step=gate(step, health, namespace_of(finding), blocker_of=finding) if step else None,
            errors_total=errors_total,
            unblocks=tuple(sorted(waits.get(id(finding), {}))),
        ))
    rank = _dependency_ranks(candidates, health, waits)
    causes.sort(key=lambda c: _order(c, rank))
    return Triage(causes=tuple(causes), findings=tuple(findings))


NO_DEPENDENCY = 99
"""The rank of a cause nothing waits on: after every dependency rank (the Dependency enum's length bounds them)."""


def _order(cause: Cause, rank: Mapping[int, int]) -> tuple[int, int, float, int]:
    """``ORDERING`` as a sort key.  A stable sort: equal causes keep the order of their findings, which is the
    registry's report order."""
    return (rank.get(id(cause.finding), NO_DEPENDENCY), -cause.explained_errors, -cause.time_score,
            cause.confidence.rank)


def with_timing(result: Triage, timings: Mapping[str, tuple[float, str | None]]) -> Triage:
    """``result`` with each cause's time evidence (cause key -> (score 0-1, sentence)) and re-ordered by ``ORDERING``.

    The hook for ``commands.telemetry.relate``: time is the tie-breaker within equal impact, never above what
    other steps wait on or what explains more errors; a cause with score 0 (no change shortly before the onset,
    or no onset at all) keeps its place.
    """
    causes = [replace(c, time_score=timings[c.key][0], timing=timings[c.key][1]) if timings.get(c.key, (0, None))[0]
              else c for c in result.causes]
    health = MeshHealth.from_findings(result.findings)
    # A cause others wait on carries their keys in ``unblocks``: its rank is the dependency it breaks, as in triage().
    rank = {id(c.finding): min(b.dependency.rank for b in health.failing if b.finding is c.finding)
            for c in causes if c.unblocks}
    causes.sort(key=lambda c: _order(c, rank))
    return Triage(causes=tuple(causes), findings=result.findings)


def _key(finding: Finding) -> str:
    return f"{finding.code}:{finding.origin}"


def _waits_on(candidates: Sequence[tuple[Finding, tuple[Finding, ...], Remediation | None]],
              health: MeshHealth) -> dict[int, dict[str, None]]:
    """For each cause's finding, the keys of the other causes whose first step it blocks."""
    waits: dict[int, dict[str, None]] = {}
    for finding, _, step in candidates:
        if step is None:
            continue
        for blocker in health.blockers(step, namespace_of(finding)):
            if blocker.finding is not finding:
                waits.setdefault(id(blocker.finding), {})[_key(finding)] = None
    return waits


def _dependency_ranks(candidates: Sequence[tuple[Finding, tuple[Finding, ...], Remediation | None]],
                      health: MeshHealth, waits: Mapping[int, object]) -> dict[int, int]:
    """Causes other steps wait on (by id of their finding), by how fundamental what they break is."""
    ranks: dict[int, int] = {}
    for finding, _, _ in candidates:
        if id(finding) in waits:
            ranks[id(finding)] = min(b.dependency.rank for b in health.failing if b.finding is finding)
    return ranks


def _links_from(finding: Finding, effects: dict[int, list[Link]]) -> list[Link]:
    return effects.get(id(finding), [])


def _reach(start: Finding, effects: dict[int, list[Link]]) -> set[int]:
    """Every finding ``start`` explains, directly or through a chain."""
    seen: set[int] = set()
    stack = [start]
    while stack:
        for link in effects.get(id(stack.pop()), []):
            if id(link.effect) not in seen and link.effect is not start:
                seen.add(id(link.effect))
                stack.append(link.effect)
    return seen


def _confidence(finding: Finding, effects: dict[int, list[Link]]) -> Confidence:
    """High when a direct link is certain; a lone error nothing else corroborates is low."""
    direct = effects.get(id(finding), [])
    if not direct:
        return Confidence.LOW if finding.level != Level.ERROR else Confidence.MEDIUM
    return min((link.confidence for link in direct), key=lambda c: c.rank)


# -- one alert's view ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scoped:
    """A triage narrowed to where one alert points: the causes that touch it, with their findings, and the rest."""

    causes: tuple[Cause, ...]
    findings: tuple[Finding, ...]
    """Everything shown in that alert's thread: the causes, what they explain, and other findings in scope."""
    elsewhere: tuple[Finding, ...]
    """Findings about other namespaces that no cause in scope explains: summarised, not listed."""

    @property
    def top(self) -> Cause | None:
        return self.causes[0] if self.causes else None

    @property
    def elsewhere_namespaces(self) -> tuple[str, ...]:
        return tuple(sorted({ns for f in self.elsewhere if (ns := namespace_of(f))}))


def scoped(result: Triage, namespaces: Iterable[str]) -> Scoped:
    """The part of ``result`` an alert about ``namespaces`` is about (everything when it names none).

    A finding touches the scope when it is about one of those namespaces, calls a service there, or is
    not about any namespace (mesh-wide).  A cause is kept when it or anything it explains touches the
    scope: an expired root in istio-system stays in a prod alert's thread because it explains prod's 503s.
    """
    scope = frozenset(namespaces)
    if not scope:
        return Scoped(result.causes, result.findings, ())

    def touches(finding: Finding) -> bool:
        own = namespace_of(finding)
        upstream = upstream_of(finding)
        return own is None or own in scope or (upstream is not None and upstream[0] in scope)

    causes = tuple(c for c in result.causes if touches(c.finding) or any(touches(e) for e in c.explains))
    kept = {id(f) for c in causes for f in (c.finding, *c.explains)}
    claimed = {id(f) for c in result.causes for f in (c.finding, *c.explains)}
    shown, elsewhere = [], []
    for finding in result.findings:
        if id(finding) in kept or (id(finding) not in claimed and touches(finding)):
            shown.append(finding)
        else:
            elsewhere.append(finding)
    return Scoped(causes, tuple(shown), tuple(elsewhere))


def shared_cause(ours: Sequence[Cause], theirs: Sequence[Mapping[str, Any]]) -> str | None:
    """The title of the cause two diagnoses share, when they are one outage; None otherwise.

    ``theirs`` is another diagnosis's stored triage (``Cause.to_dict`` items).  Shared means one side's first
    cause is also a cause on the other side, and on both sides it explains other findings: a lone error both
    diagnoses happen to see (a gateway certificate expiring next week) does not make two alerts one outage.
    """
    if not ours or not theirs:
        return None
    our_chains = {c.key: c.title for c in ours if c.is_chain}
    their_chains = {str(c["key"]): str(c["title"]) for c in theirs if c.get("explained")}
    our_top, their_top = ours[0].key, str(theirs[0]["key"])
    if our_top in our_chains and our_top in their_chains:
        return our_chains[our_top]
    if their_top in their_chains and their_top in our_chains:
        return their_chains[their_top]
    return None
