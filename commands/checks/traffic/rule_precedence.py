"""Several DestinationRules for one host: which one a caller's sidecar uses, as istiod picks it, and what the rest lose.

istiod never merges rules across namespaces and, since Istio 1.20, never inherits fields from a broader rule
(PILOT_ENABLE_DESTINATION_RULE_INHERITANCE was dropped, istio/istio#46270).  For a caller in namespace C and a
Service in namespace N it takes the first of (istio/istio pilot/pkg/model/push_context.go ``destinationRule``):

1. the rules in C itself (any exportTo that includes C), or, when C is the root namespace, its private rules;
2. the rules N exports to C;
3. the rules the root namespace exports to C;

at each step the most specific host wins (an exact host over a wildcard, a longer wildcard over a shorter:
pilot/pkg/model/config.go ``MostSpecificHostMatch``).  Rules of one namespace for the same host string and the same
exportTo are merged (push_context.go ``setDestinationRules``, destination_rule.go ``mergeDestinationRule``, oldest
first by creationTimestamp, then name): the later rule only adds subsets of new names; its top-level trafficPolicy
is used only when no earlier rule has one.  When rules with different exportTo stay apart, the caller's sidecar
uses the last of them (pilot/pkg/model/sidecar.go ``SidecarScope.DestinationRule``).

A rule without exportTo takes meshConfig.defaultDestinationRuleExportTo, of which istiod honours only ``.`` and
``*`` (push_context.go ``setDestinationRules``: "No exportTo in destinationRule. Use the global default. We only
honor . and *"): with ``.`` in the default such a rule is private to its namespace, otherwise it is exported to
every namespace (also when the default is unset, ``initDefaultExportMaps``).

A rule with a workloadSelector is kept apart from the others (mergeDestinationRule merges only rules whose
selectors are equal) and serves only the pods it selects in its own namespace: of the rules the lookup above found,
a sidecar takes the first whose selector its labels match, else the last without a selector, else none at all
(sidecar.go ``SidecarScope.DestinationRule``).  The lookup stops at the first step that found any rule, so a
namespace whose only rule for a host has a selector leaves its other pods with no rule: the Service owner's subsets
do not exist for them (NC, 503).  Callers are therefore judged per namespace and, where a rule of theirs selects
pods, per group of pods that the same selectors match.

Istio has no analyzer for this (pkg/config/analysis/analyzers/destinationrule holds the CA-certificate and subset
ones only).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from commands import codes
from commands.checks.traffic.tls_modes import DEFAULT_DOMAIN
from commands.cluster.selectors import matches
from commands.cluster.snapshot import Resource
from commands.findings import Finding, Remediation

PUBLIC, PRIVATE = "*", "."
MAX_NAMED = 4
EVIDENCE_HOSTS = 50
"""How many hosts a wildcard finding's evidence lists (its message gives the count)."""


@dataclass
class Consolidated:
    """One rule as istiod holds it after merging same-host rules of a namespace: the rules in creation order."""

    host: str
    export_to: frozenset[str]
    rules: list[Resource] = field(default_factory=list)
    selector: Mapping[str, str] | None = None
    """The workloadSelector's matchLabels; None for a rule that serves every pod that looks it up."""

    def selects(self, labels: Mapping[str, str]) -> bool:
        return self.selector is not None and matches(self.selector, labels)

    @property
    def policy_from(self) -> Resource | None:
        """The rule whose top-level trafficPolicy applies: the oldest that has one (``{}`` counts, as a non-nil
        proto does in mergeDestinationRule)."""
        return next((r for r in self.rules if r.spec.get("trafficPolicy") is not None), None)

    def subset_owner(self, name: str) -> Resource | None:
        return next((r for r in self.rules if any(s.get("name") == name for s in r.spec.get("subsets") or ())), None)

    def exported_to(self, client: str) -> bool:
        return not self.export_to or PUBLIC in self.export_to or client in self.export_to

    @property
    def names(self) -> str:
        return " merged with ".join(r.origin for r in self.rules)


Index = dict[str, list[Consolidated]]
"""Host string (resolved) -> its consolidated rules, in creation order."""


@dataclass(frozen=True)
class Choice:
    rule: Consolidated | None
    """None: the step found only rules with a selector, none of which selects these pods (no rule at all)."""
    reason: str


def selector_of(rule: Resource) -> dict[str, str] | None:
    selector = rule.spec.get("workloadSelector")
    if not isinstance(selector, Mapping):
        return None
    return {str(k): str(v) for k, v in (selector.get("matchLabels") or {}).items()}


def resolved_host(rule: Resource) -> str:
    """A short host resolves in the rule's namespace (pilot/pkg/model/config.go ResolveShortnameToFQDN)."""
    host = str(rule.spec.get("host") or "")
    if "." in host or host.startswith("*"):
        return host
    return f"{host}.{rule.namespace}.svc.{DEFAULT_DOMAIN}"


class RuleIndex:
    """istiod's destinationRuleIndex: namespace-local, exported-by-namespace and the root's private rules."""

    def __init__(self, rules: Iterable[Resource], root_namespace: str, *, private_by_default: bool = False):
        self.root = root_namespace
        self.private_by_default = private_by_default
        """meshConfig.defaultDestinationRuleExportTo holds ``.``: a rule without exportTo stays in its namespace."""
        self.local: dict[str, Index] = {}
        self.exported: dict[str, Index] = {}
        self.root_private: Index = {}
        self._by_host: dict[str, list[Resource]] = {}
        ordered = sorted(rules, key=lambda r: (str(r.metadata.get("creationTimestamp") or ""), r.name,
                                               r.namespace or ""))
        for rule in ordered:
            self._add(rule)
        self._wildcards = [h for h in self._by_host if h.startswith("*")]

    def _add(self, rule: Resource) -> None:
        self._by_host.setdefault(resolved_host(rule), []).append(rule)
        namespace = rule.namespace or "default"
        export_to = frozenset(str(e) for e in rule.spec.get("exportTo") or ())
        if not export_to or export_to & {PUBLIC, PRIVATE, namespace}:
            _merge(self.local.setdefault(namespace, {}), rule, export_to)
        if (not export_to and self.private_by_default) or (len(export_to) == 1 and export_to & {PRIVATE, namespace}):
            if namespace == self.root:
                _merge(self.root_private, rule, export_to)
        else:
            _merge(self.exported.setdefault(namespace, {}), rule, export_to)

    def choose(self, client: str, service_host: str, service_namespace: str,
               labels: Mapping[str, str] | None = None) -> Choice | None:
        """The rule a sidecar in ``client`` with pod ``labels`` uses for the Service ``service_host``
        (push_context.go destinationRule, then sidecar.go SidecarScope.DestinationRule); None: no step found any."""
        if client != self.root:
            found = _most_specific(self.local.get(client, {}), service_host)
            where = f"its own namespace {client} comes first"
        else:
            found = _most_specific(self.root_private, service_host)
            where = f"the root namespace's private rules come first for callers in {client}"
        if found:
            return _pick(found, client, labels or {}, where)
        for owner, why in ((service_namespace, f"the Service's namespace {service_namespace} exports it"),
                           (self.root, f"the root namespace {self.root} exports it")):
            visible = [c for c in _most_specific(self.exported.get(owner, {}), service_host) if c.exported_to(client)]
            if visible:
                return _pick(visible, client, labels or {}, why)
        return None

    def visible(self, rule: Resource, client: str, service_namespace: str,
                labels: Mapping[str, str] | None = None) -> bool:
        """Whether ``choose`` consults ``rule`` for a caller in ``client`` with pod ``labels``: a rule of a third
        namespace never is, nor a rule whose selector does not select these pods (or selects another namespace's)."""
        namespace, host = rule.namespace or "default", resolved_host(rule)
        selector = selector_of(rule)
        if selector is not None and (namespace != client or not matches(selector, labels or {})):
            return False
        if namespace == client:
            own = self.root_private if client == self.root else self.local.get(client, {})
            if any(_holds(c, rule) for c in own.get(host, ())):
                return True
        if namespace not in (service_namespace, self.root):
            return False
        return any(_holds(c, rule) and c.exported_to(client) for c in self.exported.get(namespace, {}).get(host, ()))

    def candidates(self, service_host: str) -> list[Resource]:
        """Every rule (selector-less) whose host covers the Service, whoever can see it; wildcard hosts are few, so
        a mesh of many Services costs one lookup each."""
        covering = [h for h in self._wildcards if _covers(h, service_host)]
        return [r for h in (service_host, *covering) for r in self._by_host.get(h, ())]


def _pick(found: list[Consolidated], client: str, labels: Mapping[str, str], why: str) -> Choice:
    """sidecar.go SidecarScope.DestinationRule: the first rule of the caller's own namespace whose selector matches
    its pods, else the last rule without a selector, else none (the lookup does not go on to the next step)."""
    for consolidated in found:
        if consolidated.rules[0].namespace == client and consolidated.selects(labels):
            return Choice(consolidated, f"{why}, and its workloadSelector selects these pods")
    catch_all = [c for c in found if c.selector is None]
    if catch_all:
        return Choice(catch_all[-1], why)
    return Choice(None, f"{why}, but only with rules whose workloadSelector selects other pods, and istiod looks no "
                        "further: these pods get no rule for the host")


def _merge(index: Index, rule: Resource, export_to: frozenset[str]) -> None:
    """mergeDestinationRule with ENABLE_ENHANCED_DESTINATIONRULE_MERGE (default on): same host, exportTo and
    workloadSelector merge.

    istiod also merges a rule whose exportTo is a strict superset of an earlier one's into it (and keeps it apart
    too); that rarer case is kept apart only here."""
    entries = index.setdefault(resolved_host(rule), [])
    selector = selector_of(rule)
    same = next((e for e in entries if e.export_to == export_to and e.selector == selector), None)
    if same is None:
        entries.append(Consolidated(resolved_host(rule), export_to, [rule], selector))
    else:
        same.rules.append(rule)


def _holds(consolidated: Consolidated, rule: Resource) -> bool:
    return any(r is rule for r in consolidated.rules)


def _covers(host: str, service_host: str) -> bool:
    return host == service_host or (host.startswith("*") and service_host.endswith(host[1:]))


def _most_specific(index: Index, service_host: str) -> list[Consolidated]:
    if service_host in index:
        return index[service_host]
    wildcards = [h for h in index if h.startswith("*") and service_host.endswith(h[1:])]
    return index[max(wildcards, key=len)] if wildcards else []


def private_by_default(mesh_config: Mapping[str, Any]) -> bool:
    """Whether meshConfig.defaultDestinationRuleExportTo keeps a rule without exportTo in its own namespace."""
    default = mesh_config.get("defaultDestinationRuleExportTo")
    return isinstance(default, list) and PRIVATE in (str(e) for e in default)


Callers = Mapping[str, Sequence[Mapping[str, str]]]
"""Caller namespace -> the labels of its pods with a sidecar (a rule's workloadSelector picks among them)."""


def precedence_findings(rules: Sequence[Resource], services: Iterable[Resource], callers: Callers,
                        root_namespace: str, mesh_config: Mapping[str, Any] | None = None) -> Iterator[Finding]:
    """For each Service more than one rule covers, each rule a caller namespace can see but does not get, with the
    rule used instead and what the lost settings would have done: MB5020 for a rule of this very host (or merged
    into the used one), one MB5021 per broader wildcard rule for all the hosts that stop it."""
    index = RuleIndex(rules, root_namespace, private_by_default=private_by_default(mesh_config or {}))
    stopped: dict[int, StoppedWildcard] = {}
    for service in services:
        host = f"{service.name}.{service.namespace}.svc.{DEFAULT_DOMAIN}"
        candidates = index.candidates(host)
        if len(candidates) < 2:
            continue
        for rule, winner, reasons in _lost_rules(index, service, host, candidates, callers):
            effects = _lost_effects(rule, winner)
            if not effects:
                continue
            if (winner is not None and _holds(winner, rule)) or resolved_host(rule) == host:
                yield _lost_rule_finding(service, rule, winner, reasons, effects)
            else:
                stopped.setdefault(id(rule), StoppedWildcard(rule)).add(service, winner, reasons, effects)
    for wildcard in stopped.values():
        yield wildcard.finding()


def _lost_rules(index: RuleIndex, service: Resource, host: str, candidates: Sequence[Resource],
                callers: Callers) -> Iterator[tuple[Resource, Consolidated | None, dict[str, str]]]:
    """(rule, the rules used instead or None, caller -> why) for each rule some callers see but do not get."""
    clients = sorted(callers)
    namespace = service.namespace or "default"
    owners = {r.namespace or "default" for r in candidates}
    named = {namespace, index.root, *owners, *(str(e) for r in candidates for e in r.spec.get("exportTo") or ())}
    everyone = clients + sorted((owners | {namespace}).difference(clients))
    # A caller namespace no candidate names (not its own, not in an exportTo) gets what every such namespace gets:
    # judge one and count them all, so a mesh of many namespaces costs one resolution more, not one per namespace.
    others = [c for c in everyone if c not in named]
    judged = [(c, [c]) for c in everyone if c in named] + ([(others[0], others)] if others else [])
    lost: dict[tuple[int, ...], tuple[Resource, Consolidated | None, dict[str, str]]] = {}
    for client, group in judged:
        for labels, who in _pod_groups(client, group, candidates, callers):
            choice = index.choose(client, host, namespace, labels)
            if choice is None:
                continue
            used = choice.rule
            for rule in candidates:
                if (used is None or rule is not used.policy_from) and index.visible(rule, client, namespace, labels):
                    # The same used rules may be reached by different steps (own namespace, Service's namespace).
                    key = (id(rule), *(id(r) for r in (used.rules if used else ())))
                    lost.setdefault(key, (rule, used, {}))[2].update(dict.fromkeys(who, choice.reason))
    yield from lost.values()


def _pod_groups(client: str, group: list[str], candidates: Sequence[Resource],
                callers: Callers) -> Iterator[tuple[Mapping[str, str] | None, list[str]]]:
    """(labels of one pod standing for the group, the callers it stands for): the namespace whole, or, where a rule
    of its own has a workloadSelector, its pods grouped by which of those selectors match them."""
    selectors = [selector for rule in candidates
                 if (rule.namespace or "default") == client and (selector := selector_of(rule)) is not None]
    if not selectors:
        yield None, group
        return
    groups: dict[tuple[bool, ...], Mapping[str, str]] = {}
    for labels in callers.get(client, ()):
        groups.setdefault(tuple(matches(selector, labels) for selector in selectors), labels)
    for matched, labels in groups.items():
        chosen = next((selector for selector, hit in zip(selectors, matched) if hit), None)
        who = (f"{client} (pods with {', '.join(f'{k}={v}' for k, v in sorted(chosen.items()))})" if chosen is not None
               else f"{client} (pods that no workloadSelector selects)")
        yield labels, [who]


def _lost_rule_finding(service: Resource, rule: Resource, winner: Consolidated | None, reasons: dict[str, str],
                       effects: list[str]) -> Finding:
    applied, callers = (winner.policy_from if winner else None), sorted(reasons)
    because = "; ".join(dict.fromkeys(reasons.values()))
    if winner is None:
        why = f"no rule is used instead: {because}"
        fix = (f"Give the pods that no workloadSelector selects a rule of their own for this host (without a selector, "
               f"with what {rule.origin} sets), or remove the selector rules that leave them without one")
    else:
        why = (f"it is merged into {winner.names}, where only the oldest trafficPolicy "
               f"({applied.origin if applied else 'none'}) is used" if _holds(winner, rule)
               else f"{winner.names} is used instead: {because}")
        fix = (f"Keep one DestinationRule per host for these callers: move what {rule.origin} should set into "
               f"{(applied or winner.rules[0]).origin}, or narrow the rules' exportTo so each caller sees the one "
               "meant for it (precedence: the caller's namespace, then the Service's, then the root namespace)")
    return codes.finding(
        "MB5020", origin=rule.origin, reference=rule.source, destination_rule=rule.origin,
        host=f"{service.name}.{service.namespace}", callers=_first(callers), why=why, effects="; ".join(effects),
        evidence={"service": service.qualified_name, "callers": callers,
                  "used": [r.origin for r in winner.rules] if winner else [], "reason": reasons,
                  "ignored_settings": effects},
        remediation=Remediation(fix, command=f"istioctl x describe service {service.name} -n {service.namespace}"))


@dataclass
class StoppedWildcard:
    """A wildcard rule (``*.local``, ``*.prod.svc.cluster.local``) and the hosts whose own rules stop it."""

    rule: Resource
    hosts: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    effects: dict[str, None] = field(default_factory=dict)

    def add(self, service: Resource, winner: Consolidated | None, reasons: dict[str, str], effects: list[str]) -> None:
        entry = self.hosts.setdefault(f"{service.name}.{service.namespace}", {"used": set(), "callers": set()})
        entry["used"].update(r.origin for r in (winner.rules if winner else ()))
        entry["callers"].update(reasons)
        self.effects.update(dict.fromkeys(effects))

    def finding(self) -> Finding:
        hosts = sorted(self.hosts)
        shown = {h: {key: sorted(values) for key, values in self.hosts[h].items()} for h in hosts[:EVIDENCE_HOSTS]}
        return codes.finding(
            "MB5021", origin=self.rule.origin, reference=self.rule.source, destination_rule=self.rule.origin,
            wildcard=resolved_host(self.rule),
            count=f"{len(hosts)} host{'s' if len(hosts) > 1 else ''}", hosts=_first(hosts), effects="; ".join(self.effects),
            evidence={"wildcard": resolved_host(self.rule), "count": len(hosts),
                      "hosts": shown,
                      "ignored_settings": list(self.effects)},
            remediation=Remediation(
                # Inheritance is gone (istio/istio#46270): the only way to give a host the setting is its own rule.
                f"If these hosts need what {self.rule.origin} sets, add it to each host's own rule (for "
                f"{hosts[0]}: {', '.join(shown[hosts[0]]['used'])}); a broader rule never fills in a field",
                command="kubectl get destinationrules -A"))


def _lost_effects(rule: Resource, winner: Consolidated | None) -> list[str]:
    """What ``rule`` sets that these callers do not get (its trafficPolicy is never the used one), and what that means."""
    effects = _policy_effects(rule.spec.get("trafficPolicy") or {})
    names = [str(s.get("name")) for s in rule.spec.get("subsets") or ()]
    # A route to a subset no used rule defines points at a cluster istiod never builds (Envoy: NC, 503; IST0101).
    if missing := [n for n in names if winner is None or winner.subset_owner(n) is None]:
        effects.append(f"its subsets {', '.join(missing)} do not exist for them, so routes to them find no cluster "
                       "(NC, 503)" if len(missing) > 1 else
                       f"its subset {missing[0]} does not exist for them, so routes to it find no cluster (NC, 503)")
    for name in names:
        owner = winner.subset_owner(name) if winner else None
        if owner is not None and owner is not rule:
            effects.append(f"its subset {name} is taken from {owner.origin} (with that rule's labels)")
    return effects


def _policy_effects(policy: Mapping[str, Any]) -> list[str]:
    # Each field as cluster_traffic_policy.go applies it; ignored, it falls back to the winner's or Istio's default.
    effects = []
    if mode := (policy.get("tls") or {}).get("mode"):
        effects.append(f"its tls mode {mode} is not used (auto mutual TLS or the used rule's mode applies)")
    if policy.get("outlierDetection"):
        effects.append("its outlierDetection ejects no host")
    if policy.get("connectionPool"):
        effects.append("its connectionPool limits and timeouts do not apply")
    if policy.get("loadBalancer"):
        effects.append("its loadBalancer setting is not used")
    if policy.get("portLevelSettings"):
        effects.append("its portLevelSettings do not apply")
    return effects


def _first(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    more = len(names) - MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")
