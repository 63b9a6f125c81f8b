"""VirtualService route rules that can never be used (IST0130) and matches that never win (IST0131).

Istio checks these while validating a VirtualService (istio/istio pkg/config/validation/validation.go,
analyzeUnreachableHTTPRules / TCP / TLS, genMatchHTTPRoutes, coveredValidation); ``istioctl analyze``
reports them through its schema validation analyzer.  Envoy tries routes in order and takes the
first match, so a rule behind a catch-all, or a match an earlier rule already has, receives nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from commands.analyze import analyzer, report, unique
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Resource
from commands.findings import Finding
from commands.shapes import mapping, mappings

ReportUnused = Callable[[str, str], None]
ReportIneffective = Callable[[str, str, str], None]


def _quoted(name: str) -> str:
    return json.dumps(name)  # Go's %q for the names Kubernetes allows


def route_name(route: Mapping[str, Any], index: int, *, http: bool) -> str:
    """``"name"`` for a named HTTP route, ``#index`` otherwise (TCP and TLS routes have no names)."""
    return _quoted(str(route["name"])) if http and route.get("name") else f"#{index}"


def match_name(match: Mapping[str, Any], index: int, *, http: bool) -> str:
    return _quoted(str(match["name"])) if http and match.get("name") else f"#{index}"


def _without_defaults(value: Any) -> Any:
    """Drop zero values the way protobuf's JSON omits them, so ``ignoreUriCase: false`` equals absent."""
    if isinstance(value, Mapping):
        cleaned = {str(k): _without_defaults(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in (None, "", 0, False, {}, [])}
    if isinstance(value, list):
        return [_without_defaults(v) for v in value]
    return value


def match_key(match: Mapping[str, Any], *, http: bool) -> str:
    """What a match routes on: its canonical JSON, without the HTTP match's name."""
    body = {k: v for k, v in match.items() if not (http and k == "name")}
    return json.dumps(_without_defaults(body), sort_keys=True, default=str)


@dataclass(frozen=True)
class PrefixMatch:
    """One HTTP match with a URI prefix, reduced to what Istio's overlap check compares."""

    route: str
    match: str
    prefix: str
    port: int
    method: str
    authority: str
    headers: Mapping[str, str]
    query_params: Mapping[str, str]
    without_headers: Mapping[str, str]

    @classmethod
    def of(cls, match: Mapping[str, Any], route: str, name: str) -> PrefixMatch | None:
        prefix = str(mapping(match.get("uri")).get("prefix") or "")
        if not prefix:
            return None
        port = match.get("port")
        return cls(route=route, match=name, prefix=prefix, port=port if isinstance(port, int) else 0,
                   # Istio treats a match without a method as GET for this comparison.
                   method=_string_match(match.get("method")) or "exact:GET",
                   authority=_string_match(match.get("authority")),
                   headers=_string_matches(match.get("headers")),
                   query_params=_string_matches(match.get("queryParams")),
                   without_headers=_string_matches(match.get("withoutHeaders")))

    def covers(self, later: PrefixMatch) -> bool:
        """This earlier match takes every request ``later`` would (Istio's coveredValidation)."""
        if not later.prefix.startswith(self.prefix) or later.port != self.port:
            return False
        if not _covers_value(self.method, later.method) or not _covers_value(self.authority, later.authority):
            return False
        return all(_covers_map(a, b) for a, b in ((self.headers, later.headers),
                                                  (self.query_params, later.query_params),
                                                  (self.without_headers, later.without_headers)))


def _string_match(value: Any) -> str:
    value = mapping(value)
    if value.get("exact"):
        return f"exact:{value['exact']}"
    if value.get("prefix"):
        return f"prefix:{value['prefix']}"
    return ""


def _string_matches(value: Any) -> dict[str, str]:
    return {str(k): _string_match(v) for k, v in mapping(value).items()}


def _covers_value(earlier: str, later: str) -> bool:
    return earlier == later or earlier.startswith(later)


def _covers_map(earlier: Mapping[str, str], later: Mapping[str, str]) -> bool:
    if len(earlier) != len(later):
        return False
    return all(key in later and _covers_value(value, later[key]) for key, value in earlier.items())


def check_rules(routes: list[Mapping[str, Any]], *, http: bool, unused: ReportUnused,
                ineffective: ReportIneffective) -> None:
    """Istio's analyzeUnreachable{HTTP,TCP,TLS}Rules over one list of route rules."""
    seen: dict[str, int] = {}
    catch_all_seen = False
    prefixes: list[PrefixMatch] = []
    for index, route in enumerate(routes):
        name = route_name(route, index, http=http)
        matches = [mapping(m) for m in route.get("match") or ()]
        if not matches:
            if catch_all_seen:
                unused(name, "only the last rule can have no matches")
            catch_all_seen = True
            continue
        duplicates = 0
        for match_index, match in enumerate(matches):
            if catch_all_seen:
                unused(name, "route without matches defined before")
                continue
            key = match_key(match, http=http)
            if key in seen:
                first = seen[key]
                ineffective(name, match_name(match, match_index, http=http),
                            route_name(routes[first], first, http=http))
                duplicates += 1
                continue
            seen[key] = index
            prefix = PrefixMatch.of(match, name, match_name(match, match_index, http=http)) if http else None
            if prefix is not None:
                prefixes.append(prefix)
        if duplicates == len(matches):
            unused(name, "all matches used by prior rules")
    for position, earlier in enumerate(prefixes):
        for later in prefixes[position + 1:]:
            if later.prefix != earlier.prefix and earlier.covers(later):
                ineffective(later.route, f"{later.match} of prefix {later.prefix}",
                            f"{earlier.match} of prefix {earlier.prefix} on {earlier.route}")


@analyzer("virtualservice.MatchAnalyzer", inputs=("VirtualService",))
def unreachable_rules(ctx: CheckContext) -> list[Finding]:
    """IST0130 for route rules no request can reach, IST0131 for matches an earlier rule already takes."""
    findings: list[Finding] = []
    for vs in ctx.snapshot.of_kind("VirtualService"):
        findings.extend(_vs_findings(vs))
    return unique(findings)


def _vs_findings(vs: Resource) -> list[Finding]:
    findings: list[Finding] = []

    def unused(rule: str, reason: str) -> None:
        findings.append(report("IST0130", vs, ruleno=rule, reason=reason))

    def ineffective(rule: str, match: str, duplicate_of: str) -> None:
        findings.append(report("IST0131", vs, ruleno=rule, matchno=match, dupno=duplicate_of))

    for section in ("http", "tcp", "tls"):
        check_rules(mappings(vs.spec.get(section)), http=section == "http", unused=unused, ineffective=ineffective)
    return findings
