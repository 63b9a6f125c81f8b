"""An AuthorizationPolicy as istiod reads it: action, dry-run, selection, and rules of typed matches.

Field names and semantics follow istio/api ``security/v1beta1/authorization_policy.proto`` and
istio/istio ``pilot/pkg/security/authz/model/model.go`` (``New``): the ``from`` entries of a rule
are OR-ed, so are its ``to`` entries; ``from``, ``to`` and ``when`` are AND-ed; inside one source
or operation every field must match, and a field matches when any value matches and no
``not`` value does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from commands.cluster.snapshot import Resource, Snapshot
from commands.shapes import mapping, mappings

# istio/api annotation ``istio.io/dry-run``; istiod parses it with Go's strconv.ParseBool
# (pilot/pkg/security/authz/builder/builder.go isDryRun), so these spellings mean true.
DRY_RUN_ANNOTATION = "istio.io/dry-run"
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})

SOURCE_FIELDS = ("principals", "namespaces", "serviceAccounts", "trustDomains", "requestPrincipals",
                 "ipBlocks", "remoteIpBlocks")
OPERATION_FIELDS = ("hosts", "ports", "methods", "paths")
# Fields Envoy can only evaluate on HTTP: on a TCP filter chain istiod skips an ALLOW rule that uses
# them and drops them from a DENY/AUDIT rule, widening it (pilot/pkg/security/authz/model/generator.go
# "is HTTP only", and model.go checkError).
HTTP_ONLY_FIELDS = frozenset({"requestPrincipals", "hosts", "methods", "paths"})
HTTP_ONLY_CONDITION_PREFIXES = ("request.headers", "request.auth.")


class Action(StrEnum):
    """AuthorizationPolicy.Action; the proto's zero value, and so an omitted action, is ALLOW."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"
    CUSTOM = "CUSTOM"


@dataclass(frozen=True)
class Values:
    """One attribute's ``values`` and ``notValues`` (``principals`` / ``notPrincipals``, say)."""

    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.values or self.not_values)


@dataclass(frozen=True)
class Clause:
    """One ``from[].source`` or ``to[].operation``: field name -> its values; every field must match."""

    fields: Mapping[str, Values]

    @property
    def http_only(self) -> bool:
        return any(name in HTTP_ONLY_FIELDS for name in self.fields)


@dataclass(frozen=True)
class Condition:
    """One ``when`` entry: an attribute key and its values."""

    key: str
    values: Values

    @property
    def http_only(self) -> bool:
        return self.key.startswith(HTTP_ONLY_CONDITION_PREFIXES)


@dataclass(frozen=True)
class Rule:
    index: int
    sources: tuple[Clause, ...]
    operations: tuple[Clause, ...]
    conditions: tuple[Condition, ...]

    @property
    def matches_everything(self) -> bool:
        """``{}`` and its equivalents (``from: [{}]``): no field constrains any request."""
        return (not any(s.fields for s in self.sources) and not any(o.fields for o in self.operations)
                and not self.conditions)

    @property
    def http_only(self) -> bool:
        return (any(c.http_only for c in (*self.sources, *self.operations))
                or any(c.http_only for c in self.conditions))


@dataclass(frozen=True)
class Policy:
    resource: Resource
    action: Action
    dry_run: bool
    provider: str | None
    selector: Mapping[str, str] | None
    """``selector.matchLabels``; None when the policy has no selector (namespace- or mesh-wide)."""
    target_refs: tuple[Mapping[str, Any], ...]
    rules: tuple[Rule, ...]

    @property
    def namespace(self) -> str:
        return self.resource.namespace or ""

    @property
    def name(self) -> str:
        return self.resource.name

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def enforced(self) -> bool:
        """Dry-run policies become Envoy shadow rules (stats and logs only) and AUDIT only logs."""
        return not self.dry_run and self.action in (Action.ALLOW, Action.DENY, Action.CUSTOM)

    @property
    def inspect_command(self) -> str:
        return f"kubectl get authorizationpolicy -n {self.namespace} {self.name} -o yaml"


def parse_policy(resource: Resource) -> Policy:
    """Read one AuthorizationPolicy; malformed fields are skipped, as istiod skips invalid rules."""
    spec = resource.spec
    raw_action = str(spec.get("action") or "ALLOW").upper()
    action = Action(raw_action) if raw_action in Action.__members__ else Action.ALLOW
    selector = spec.get("selector")
    target_refs = tuple(mappings(spec.get("targetRefs"))) or tuple(
        ref for ref in (spec.get("targetRef"),) if isinstance(ref, Mapping))
    return Policy(
        resource=resource,
        action=action,
        dry_run=str(resource.annotations.get(DRY_RUN_ANNOTATION, "")) in _GO_TRUE,
        provider=str(mapping(spec.get("provider")).get("name") or "") or None,
        selector=None if selector is None else {
            str(k): str(v) for k, v in mapping(mapping(selector).get("matchLabels")).items()},
        target_refs=target_refs,
        rules=tuple(_rule(i, raw) for i, raw in enumerate(mappings(spec.get("rules")))),
    )


def policies_in(snapshot: Snapshot) -> list[Policy]:
    """Every AuthorizationPolicy of the snapshot, parsed once per snapshot."""
    cached = getattr(snapshot, "_authz_policies", None)
    if cached is None:
        cached = [parse_policy(r) for r in snapshot.of_kind("AuthorizationPolicy")]
        snapshot._authz_policies = cached  # type: ignore[attr-defined]
    return list(cached)


def _rule(index: int, raw: Mapping[str, Any]) -> Rule:
    return Rule(
        index=index,
        sources=tuple(_clause(mapping(f.get("source")), SOURCE_FIELDS) for f in mappings(raw.get("from"))),
        operations=tuple(_clause(mapping(t.get("operation")), OPERATION_FIELDS) for t in mappings(raw.get("to"))),
        conditions=tuple(Condition(str(w.get("key") or ""), Values(_strings(w.get("values")),
                                                                    _strings(w.get("notValues"))))
                         for w in mappings(raw.get("when"))),
    )


def _clause(raw: Mapping[str, Any], names: tuple[str, ...]) -> Clause:
    fields = {}
    for name in names:
        values = Values(_strings(raw.get(name)), _strings(raw.get("not" + name[0].upper() + name[1:])))
        if values:
            fields[name] = values
    return Clause(fields)


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()
