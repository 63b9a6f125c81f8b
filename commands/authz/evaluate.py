"""Which AuthorizationPolicies apply to a workload, and what they decide for one caller's request.

Selection follows istio/istio ``pilot/pkg/model/authorization.go`` (ListAuthorizationPolicies: the
root namespace's policies and the workload namespace's) and ``policyattachment.go``
(ShouldAttachPolicy).  The decision follows Envoy's filter order that
``pilot/pkg/security/authz/builder/builder.go`` builds: CUSTOM (ext_authz) first, then DENY,
then ALLOW; an ALLOW policy without rules matches nothing, and once any ALLOW policy applies a
request no ALLOW rule matches is denied with ``403 RBAC: access denied``
(https://istio.io/latest/docs/concepts/security/#implicit-enablement).  Answers are three-valued:
what the caller and request given do not say (a JWT, an IP, a header) leaves a match unknown.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from commands.authz.policy import HTTP_ONLY_FIELDS, Action, Clause, Condition, Policy, Rule, Values

# pkg/config/constants DefaultClusterLocalDomain: in a principal it stands for the mesh's own trust
# domain and all its aliases (pilot/pkg/security/trustdomain/bundle.go ReplaceTrustDomainAliases).
CLUSTER_LOCAL = "cluster.local"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
# Istio-generated waypoints carry this label value (pkg/config/constants ManagedGatewayMeshController);
# a waypoint never takes selector-based policies (policyattachment.go ShouldAttachPolicy).
MANAGED_LABEL, WAYPOINT_CONTROLLER = "gateway.istio.io/managed", "istio.io-mesh-controller"


class Match(Enum):
    NO = 0
    UNKNOWN = 1
    YES = 2


def all_of(matches: Iterable[Match]) -> Match:
    return min(matches, key=lambda m: m.value, default=Match.YES)


def any_of(matches: Iterable[Match]) -> Match:
    return max(matches, key=lambda m: m.value, default=Match.NO)


@dataclass(frozen=True)
class TrustDomains:
    """MeshConfig ``trustDomain`` and ``trustDomainAliases`` (defaults: cluster.local, none)."""

    domain: str = CLUSTER_LOCAL
    aliases: tuple[str, ...] = ()

    @classmethod
    def of(cls, mesh_config: Mapping[str, object]) -> TrustDomains:
        aliases = mesh_config.get("trustDomainAliases")
        return cls(str(mesh_config.get("trustDomain") or CLUSTER_LOCAL),
                   tuple(str(a) for a in aliases) if isinstance(aliases, list) else ())

    @property
    def all(self) -> tuple[str, ...]:
        return (self.domain, *self.aliases)

    def ours(self, trust_domain: str) -> bool:
        """Whether a principal's trust domain can name one of this mesh's workloads."""
        return (trust_domain == CLUSTER_LOCAL or trust_domain.startswith("*")
                or any(_string_match(trust_domain, td) for td in self.all))


@dataclass(frozen=True)
class Workload:
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None

    @property
    def gateway_api_name(self) -> str | None:
        return self.labels.get(GATEWAY_NAME_LABEL)

    @property
    def is_waypoint(self) -> bool:
        return self.labels.get(MANAGED_LABEL) == WAYPOINT_CONTROLLER


@dataclass(frozen=True)
class Caller:
    """Who calls.  No service account (or ``mtls=False``) means a plaintext caller with no identity."""

    namespace: str | None = None
    service_account: str | None = None
    trust_domain: str | None = None
    """None: the mesh's own trust domain."""
    mtls: bool = True
    request_principal: str | None = None
    """``iss/sub`` of a validated JWT; ``""`` when the request carries none; None when unknown."""
    ip: str | None = None

    def principal(self, trust: TrustDomains) -> str | None:
        if not self.mtls or not self.namespace or not self.service_account:
            return None
        return f"{self.trust_domain or trust.domain}/ns/{self.namespace}/sa/{self.service_account}"


@dataclass(frozen=True)
class Request:
    """What is asked; a None field is unknown.  ``http=False`` is a TCP connection."""

    port: int | None = None
    method: str | None = None
    path: str | None = None
    host: str | None = None
    headers: Mapping[str, str] | None = None
    """Request headers (any case); None when unknown."""
    http: bool = True

    def header(self, name: str) -> str | None:
        return next((v for k, v in (self.headers or {}).items() if k.lower() == name.lower()), None)


class Verdict(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    UNDETERMINED = "undetermined"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    policy: Policy | None = None
    """The DENY policy that matched; None otherwise."""
    rule: int | None = None
    allow_policies: tuple[Policy, ...] = ()
    """The ALLOW policies none of whose rules matched, when that is why the request is denied."""
    custom: tuple[Policy, ...] = ()
    """CUSTOM policies that hand the request to an external authorizer first."""
    dry_run: tuple[Policy, ...] = ()
    """Dry-run policies on the workload: they log what they would do and decide nothing."""


def selecting_policies(policies: Iterable[Policy], workload: Workload, root_namespace: str) -> list[Policy]:
    """The policies istiod attaches to ``workload``'s sidecar or gateway, in every action and mode."""
    return [p for p in policies if p.namespace in (root_namespace, workload.namespace) and attaches(p, workload)]


def attaches(policy: Policy, workload: Workload) -> bool:
    """policyattachment.go ShouldAttachPolicy for a sidecar or a gateway pod (no Service binding)."""
    gateway = workload.gateway_api_name
    if gateway is None:
        return not policy.target_refs and _selected(policy, workload)
    if not policy.target_refs:
        # ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY defaults to true (pilot/pkg/features/pilot.go).
        return not workload.is_waypoint and _selected(policy, workload)
    return policy.namespace == workload.namespace and any(
        ref.get("kind") == "Gateway" and ref.get("group", "gateway.networking.k8s.io") == "gateway.networking.k8s.io"
        and ref.get("name") == gateway and ref.get("namespace", workload.namespace) == workload.namespace
        for ref in policy.target_refs)


def _selected(policy: Policy, workload: Workload) -> bool:
    return policy.selector is None or all(workload.labels.get(k) == v for k, v in policy.selector.items())


def decide(policies: Iterable[Policy], caller: Caller, request: Request, trust: TrustDomains) -> Decision:
    """What the policies applying to a workload do to ``caller``'s ``request``."""
    applying = list(policies)
    dry_run = tuple(p for p in applying if p.dry_run)
    enforced = [p for p in applying if p.enforced]
    custom = tuple(p for p in enforced if p.action is Action.CUSTOM
                   and policy_match(p, caller, request, trust) is not Match.NO)
    unsure: list[str] = []
    for policy in (p for p in enforced if p.action is Action.DENY):
        for rule in policy.rules:
            match = rule_match(rule, policy, caller, request, trust)
            if match is Match.YES:
                return Decision(Verdict.DENIED, f"DENY policy {policy.qualified_name} rule {rule.index} matches",
                                policy=policy, rule=rule.index, custom=custom, dry_run=dry_run)
            if match is Match.UNKNOWN:
                unsure.append(f"DENY policy {policy.qualified_name} rule {rule.index} may match")
    allows = tuple(p for p in enforced if p.action is Action.ALLOW)
    allowed = any_of(policy_match(p, caller, request, trust) for p in allows) if allows else Match.YES
    if allowed is Match.NO:
        return Decision(Verdict.DENIED, _no_allow_reason(allows), allow_policies=allows, custom=custom,
                        dry_run=dry_run)
    if allowed is Match.UNKNOWN:
        unsure.append(f"whether a rule of ALLOW {_names(allows)} matches depends on what is not known")
    if custom:
        providers = ", ".join(sorted({p.provider or "?" for p in custom}))
        verb = "sends" if len(custom) == 1 else "send"
        unsure.append(f"CUSTOM {_names(custom)} {verb} it to the external authorizer ({providers}), which decides first")
    if unsure:
        return Decision(Verdict.UNDETERMINED, "; ".join(unsure), custom=custom, dry_run=dry_run)
    reason = f"ALLOW {_names(allows)} matches" if allows else "no ALLOW or DENY policy stops it"
    return Decision(Verdict.ALLOWED, reason, custom=custom, dry_run=dry_run)


def _names(policies: Iterable[Policy]) -> str:
    names = [p.qualified_name for p in policies]
    return ("policy " if len(names) == 1 else "policies ") + ", ".join(names)


def _no_allow_reason(allows: tuple[Policy, ...]) -> str:
    if not any(p.rules for p in allows):
        return f"ALLOW {_names(allows)} {'has' if len(allows) == 1 else 'have'} no rules, so nothing is allowed"
    return f"no rule of ALLOW {_names(allows)} matches"


def policy_match(policy: Policy, caller: Caller, request: Request, trust: TrustDomains) -> Match:
    """Whether any rule matches; a policy without rules matches nothing (builder.go rbacPolicyMatchNever)."""
    return any_of(rule_match(r, policy, caller, request, trust) for r in policy.rules)


def rule_match(rule: Rule, policy: Policy, caller: Caller, request: Request, trust: TrustDomains) -> Match:
    # On TCP an ALLOW rule using an HTTP-only field is skipped; DENY/AUDIT/CUSTOM drop the field instead.
    if not request.http and rule.http_only and policy.action is Action.ALLOW:
        return Match.NO
    ignore_http = not request.http
    sources = any_of(_clause_match(s, policy, caller, request, trust, ignore_http) for s in rule.sources) \
        if rule.sources else Match.YES
    operations = any_of(_clause_match(o, policy, caller, request, trust, ignore_http) for o in rule.operations) \
        if rule.operations else Match.YES
    conditions = all_of(_condition_match(c, policy, caller, request, trust, ignore_http) for c in rule.conditions)
    return all_of((sources, operations, conditions))


def _clause_match(clause: Clause, policy: Policy, caller: Caller, request: Request, trust: TrustDomains,
                  ignore_http: bool) -> Match:
    return all_of(_field_match(name, values, policy, caller, request, trust)
                  for name, values in clause.fields.items() if not (ignore_http and name in HTTP_ONLY_FIELDS))


def _condition_match(condition: Condition, policy: Policy, caller: Caller, request: Request, trust: TrustDomains,
                     ignore_http: bool) -> Match:
    if ignore_http and condition.http_only:
        return Match.YES
    if condition.key.startswith(HEADER_CONDITION) and condition.key.endswith("]"):
        return _header_match(condition.key[len(HEADER_CONDITION):-1], condition.values, request)
    field_name = _CONDITION_FIELDS.get(condition.key)
    if field_name is None:
        # Headers, claims, IPs, SNI and envoy metadata: meshbot does not know them for a caller.
        return Match.UNKNOWN
    return _field_match(field_name, condition.values, policy, caller, request, trust)


HEADER_CONDITION = "request.headers["


def _header_match(name: str, values: Values, request: Request) -> Match:
    """generator.go requestHeaderGenerator: a header matcher per value; an absent header matches no value."""
    if request.headers is None:
        return Match.UNKNOWN
    value = request.header(name)

    def one(pattern: str) -> bool:
        # matcher/header.go HeaderMatcher: "*" is a presence match, which an empty value passes too.
        return value is not None and (pattern == "*" or _string_match(pattern, value))
    positive = any(one(v) for v in values.values) if values.values else True
    negative = any(one(v) for v in values.not_values)
    return Match.YES if positive and not negative else Match.NO


_CONDITION_FIELDS = {
    "source.namespace": "namespaces", "source.principal": "principals", "source.serviceAccount": "serviceAccounts",
    "source.trustDomain": "trustDomains", "destination.port": "ports", "request.auth.principal": "requestPrincipals",
    "source.ip": "ipBlocks", "remote.ip": "remoteIpBlocks",
}


def _field_match(name: str, values: Values, policy: Policy, caller: Caller, request: Request,
                 trust: TrustDomains) -> Match:
    def one(pattern: str) -> Match:
        return _value_match(name, pattern, policy, caller, request, trust)
    positive = any_of(one(v) for v in values.values) if values.values else Match.YES
    negative = any_of(one(v) for v in values.not_values) if values.not_values else Match.NO
    return all_of((positive, _negate(negative)))


def _negate(match: Match) -> Match:
    return {Match.YES: Match.NO, Match.NO: Match.YES, Match.UNKNOWN: Match.UNKNOWN}[match]


def _known(value: object, test: bool) -> Match:
    if value is None:
        return Match.UNKNOWN
    return Match.YES if test else Match.NO


def _value_match(name: str, pattern: str, policy: Policy, caller: Caller, request: Request,
                 trust: TrustDomains) -> Match:
    principal = caller.principal(trust)
    if name == "principals":
        return Match.YES if principal and principal_matches(pattern, principal, trust) else Match.NO
    if name == "namespaces":
        # generator.go srcNamespaceGenerator: regex ``.*/ns/<pattern, * as .*>/.*`` on the peer's SPIFFE URI.
        return Match.YES if principal and re.fullmatch(
            f".*/ns/{_glob(pattern)}/.*", principal) else Match.NO
    if name == "serviceAccounts":
        namespace, _, account = pattern.rpartition("/")
        return Match.YES if principal and re.fullmatch(
            f".+/ns/{re.escape(namespace or policy.namespace)}/(.+/|)sa/{re.escape(account)}(/.+)?",
            principal) else Match.NO
    if name == "trustDomains":
        domain = principal.split("/", 1)[0] if principal else None
        return Match.YES if domain and any(_trust_domain_match(v, domain) for v in _expand(pattern, trust)) \
            else Match.NO
    if name == "requestPrincipals":
        return _known(caller.request_principal, _string_match(pattern, caller.request_principal or ""))
    if name in ("ipBlocks", "remoteIpBlocks"):
        return _known(caller.ip, caller.ip is not None and _in_block(caller.ip, pattern))
    if name == "ports":
        return _known(request.port, str(request.port) == pattern)
    if name == "methods":
        return _known(request.method, request.method == pattern)
    if name == "paths":
        if "{" in pattern:  # path templates ({*}, {**}): not evaluated here
            return Match.UNKNOWN
        return _known(request.path, _string_match(pattern, request.path or ""))
    if name == "hosts":
        return _known(request.host, _string_match(pattern.lower(), (request.host or "").lower()))
    return Match.UNKNOWN


def principal_matches(pattern: str, principal: str, trust: TrustDomains) -> bool:
    """A policy principal (after istiod's trust-domain migration) against ``td/ns/N/sa/S``."""
    return any(_string_match(candidate, principal) for candidate in migrated_principals(pattern, trust))


def migrated_principals(pattern: str, trust: TrustDomains) -> list[str]:
    """trustdomain/bundle.go ReplaceTrustDomainAliases: cluster.local or a known domain becomes each of ours."""
    parts = pattern.split("/")
    if len(parts) != 5 or parts[0] == "*":
        return [pattern]
    domain = parts[0]
    if domain != CLUSTER_LOCAL and not any(_string_match(domain, td) for td in trust.all):
        return [pattern]
    out: list[str] = []
    for td in trust.all:
        candidate = pattern if _suffix_match(td, domain) else "/".join([td, *parts[1:]])
        if candidate not in out:
            out.append(candidate)
    return out


def _suffix_match(trust_domain: str, pattern_domain: str) -> bool:
    return pattern_domain.startswith("*") and trust_domain.endswith(pattern_domain[1:])


def _expand(value: str, trust: TrustDomains) -> list[str]:
    return list(trust.all) if value in trust.all else [value]


def _trust_domain_match(pattern: str, domain: str) -> bool:
    return pattern == "*" or re.fullmatch(_glob(pattern, any_chars="[^/]*"), domain) is not None


def _string_match(pattern: str, value: str) -> bool:
    """matcher/string.go StringMatcherWithPrefix: ``*`` (non-empty), ``*suffix``, ``prefix*`` or exact."""
    if pattern == "*":
        return bool(value)
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _glob(pattern: str, any_chars: str = ".*") -> str:
    return any_chars.join(re.escape(part) for part in pattern.split("*"))


def _in_block(ip: str, block: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(block, strict=False)
    except ValueError:
        return False
