"""The client half of ``permissive-mtls``: which DestinationRule a client sidecar uses, and which keep mTLS.

With auto mTLS a client sidecar originates Istio mTLS to every endpoint labelled
``security.istio.io/tlsMode=istio`` unless the DestinationRule it uses for the host
sets TLS itself (``buildUpstreamTLSSettings`` in istio/istio
pilot/pkg/networking/core/cluster_tls.go; https://istio.io/latest/docs/tasks/security/authentication/authn-policy/#auto-mutual-tls).
So meshbot adds a rule with ``tls.mode: DISABLE`` for the affected hosts — but only
one DestinationRule applies to a host for a given client, and an existing one can
win over meshbot's (istio/istio pilot/pkg/model/push_context.go ``destinationRule``):

1. rules in the client's own namespace (``exportTo`` visible there), most specific host first;
2. then rules exported by the service's namespace, most specific host first;
3. then rules exported by the root namespace.  Proxies *in* the root namespace (gateways)
   look first at the root namespace's private rules.

Within one namespace, rules for the very same host are merged and the oldest rule's
top-level ``trafficPolicy`` wins (pilot/pkg/model/destination_rule.go ``mergeDestinationRule``).
Short hosts (``reviews``) resolve in the rule's namespace (pilot/pkg/model/config.go
``ResolveShortnameToFQDN``); ``*.local`` matches by suffix (``MostSpecificHostMatch``).
Pure: no cluster here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from commands.actions.plan import Change, Op, Path

PLAINTEXT_RULE = "meshbot-emergency-plaintext"
CLUSTER_DOMAIN = "cluster.local"
"""Kubernetes' default cluster domain; Istio's ``*.local`` examples assume it too."""
MESH_HOSTS = "*.local"
"""Every cluster-local service: the host Istio's docs use for mesh-wide DestinationRules."""
MTLS_MODES = ("ISTIO_MUTUAL", "MUTUAL")
DISABLE = "DISABLE"
TLS_MODE: Path = ("spec", "trafficPolicy", "tls", "mode")
MANAGED_BY = {"app.kubernetes.io/managed-by": "meshbot"}


def namespace_hosts(namespace: str) -> str:
    return f"*.{namespace}.svc.{CLUSTER_DOMAIN}"


def plaintext_rule(namespace: str, hosts: str) -> dict[str, Any]:
    """meshbot's DestinationRule: clients send plaintext to ``hosts``, from every namespace."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": PLAINTEXT_RULE, "namespace": namespace, "labels": dict(MANAGED_BY)},
            "spec": {"host": hosts, "exportTo": ["*"], "trafficPolicy": {"tls": {"mode": DISABLE}}}}


# -- hosts ----------------------------------------------------------------------------------------


def resolved_host(rule: Mapping[str, Any]) -> str:
    """The rule's host as istiod sees it: a name without a dot is a Service in the rule's namespace."""
    host = str((rule.get("spec") or {}).get("host") or "")
    if host == "*" or "." in host or not host:
        return host
    namespace = (rule.get("metadata") or {}).get("namespace", "")
    return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"


def within(host: str, area: str) -> bool:
    """Every name ``host`` matches is matched by the wildcard ``area`` (``*.local`` covers ``a.b.local``)."""
    if area == "*":
        return True
    if host.startswith("*"):
        return host != "*" and host[1:].endswith(area[1:])
    return host.endswith(area[1:])


def overlaps(host: str, area: str) -> bool:
    return within(host, area) or (host.startswith("*") and within(area, host))


# -- which rules win over meshbot's -----------------------------------------------------------------


def _namespace(rule: Mapping[str, Any]) -> str:
    return (rule.get("metadata") or {}).get("namespace", "")


def _name(rule: Mapping[str, Any]) -> str:
    return (rule.get("metadata") or {}).get("name", "")


def _export_to(rule: Mapping[str, Any]) -> list[str]:
    spec = rule.get("spec") or {}
    if spec.get("workloadSelector"):
        return ["."]  # rules with a workloadSelector are never exported (push_context.go setDestinationRules)
    return list(spec.get("exportTo") or [])


def _private(rule: Mapping[str, Any]) -> bool:
    export_to = _export_to(rule)
    return len(export_to) == 1 and export_to[0] in (".", _namespace(rule))


def _seen_by_own_namespace(rule: Mapping[str, Any]) -> bool:
    export_to = _export_to(rule)
    return not export_to or bool({".", "*", _namespace(rule)} & set(export_to))


def wins_over_ours(rule: Mapping[str, Any], area: str, home: str, root: str) -> str | None:
    """For which clients ``rule`` is used instead of meshbot's rule for ``area`` in ``home``; None: for none."""
    host, namespace = resolved_host(rule), _namespace(rule)
    if not overlaps(host, area):
        return None
    if namespace == home:
        if within(host, area) and host != area:
            return f"its host is more specific than {area}, so it wins for every client"
        if host == area and (rule.get("spec") or {}).get("trafficPolicy") is not None:
            return "it has the same host, and Istio keeps the older rule's trafficPolicy when it merges the two"
        if home == root and _private(rule):
            return f"proxies in {root} (gateways) read its private rules first"
        return None
    if namespace == root:
        return f"proxies in {root} (gateways) read its private rules first" if _private(rule) else None
    if home == root:
        # meshbot's mesh-wide rule is the last one Istio reads, after the client's and the service's namespace.
        return "Istio reads the client's and the service's namespace before the root namespace"
    if _seen_by_own_namespace(rule):
        return f"clients in namespace {namespace} read their own namespace's rules first"
    return None


# -- which rules keep mTLS, and the patch that stops them -----------------------------------------


def _tls_mode(policy: Mapping[str, Any] | None) -> str | None:
    tls = (policy or {}).get("tls")
    return None if tls is None else str(tls.get("mode") or DISABLE)  # tls without a mode is DISABLE


def _port_keeps_mtls(port: Mapping[str, Any]) -> bool:
    # Port-level settings replace the rule's top-level ones wholesale: no tls there is auto mTLS
    # (MergeTrafficPolicy with hasPortLevel, pilot/pkg/model/destination_rule.go).
    return _tls_mode(port) in (None, *MTLS_MODES)


def _subset_keeps_mtls(subset: Mapping[str, Any]) -> bool:
    policy = subset.get("trafficPolicy") or {}
    return _tls_mode(policy) in MTLS_MODES or any(_port_keeps_mtls(p) for p in policy.get("portLevelSettings") or ())


def mtls_kept_by(rule: Mapping[str, Any]) -> list[str]:
    """Where ``rule`` keeps client sidecars on mTLS (empty: it already sends plaintext or its own TLS)."""
    spec = rule.get("spec") or {}
    policy = spec.get("trafficPolicy")
    places = []
    mode = _tls_mode(policy)
    if mode is None:
        places.append("no tls, so auto mTLS")
    elif mode in MTLS_MODES:
        places.append(f"tls {mode}")
    ports = [p for p in (policy or {}).get("portLevelSettings") or () if _port_keeps_mtls(p)]
    if ports:
        places.append(f"{len(ports)} port-level setting(s)")
    subsets = [s.get("name", "?") for s in spec.get("subsets") or () if _subset_keeps_mtls(s)]
    if subsets:
        places.append(f"subset(s) {', '.join(subsets)}")
    return places


def _plaintext_port(port: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(port))
    if _port_keeps_mtls(port):
        out["tls"] = {**(port.get("tls") or {}), "mode": DISABLE}
    return out


def _plaintext_subset(subset: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(subset))
    policy = out.get("trafficPolicy")
    if not policy:
        return out  # inherits the top-level policy, which the patch switches
    if _tls_mode(policy) in MTLS_MODES:
        policy["tls"]["mode"] = DISABLE
    if policy.get("portLevelSettings"):
        policy["portLevelSettings"] = [_plaintext_port(p) for p in policy["portLevelSettings"]]
    return out


def plaintext_patch(rule: Mapping[str, Any]) -> Change:
    """The patch that makes ``rule`` send plaintext; each path records what was there, for the rollback.

    Paths start where the rule has nothing yet, so the rollback removes exactly what was added:
    a left-behind ``tls: {}`` would mean DISABLE, not auto mTLS.  Lists are replaced whole (a merge
    patch cannot address list items) and restored whole.
    """
    spec = rule.get("spec") or {}
    policy = spec.get("trafficPolicy")
    before: list[tuple[Path, Any]] = []
    after: list[tuple[Path, Any]] = []
    if policy is None:
        before.append((("spec", "trafficPolicy"), None))
        after.append((("spec", "trafficPolicy"), {"tls": {"mode": DISABLE}}))
    elif policy.get("tls") is None:
        before.append((TLS_MODE[:-1], None))
        after.append((TLS_MODE[:-1], {"mode": DISABLE}))
    elif _tls_mode(policy) in MTLS_MODES:
        before.append((TLS_MODE, policy["tls"]["mode"]))
        after.append((TLS_MODE, DISABLE))
    ports = (policy or {}).get("portLevelSettings") or []
    if any(_port_keeps_mtls(p) for p in ports):
        before.append((("spec", "trafficPolicy", "portLevelSettings"), copy.deepcopy(ports)))
        after.append((("spec", "trafficPolicy", "portLevelSettings"), [_plaintext_port(p) for p in ports]))
    subsets = spec.get("subsets") or []
    if any(_subset_keeps_mtls(s) for s in subsets):
        before.append((("spec", "subsets"), copy.deepcopy(subsets)))
        after.append((("spec", "subsets"), [_plaintext_subset(s) for s in subsets]))
    return Change(Op.PATCH, "DestinationRule", _namespace(rule), _name(rule), before=tuple(before),
                  after=tuple(after))


@dataclass(frozen=True)
class KeepsMtls:
    """An existing DestinationRule that would keep clients on mTLS to the affected hosts."""

    rule: Mapping[str, Any]
    host: str
    why: str
    """For which clients it wins over meshbot's rule."""
    places: tuple[str, ...]
    patchable: bool
    """Its host lies within the affected hosts, so switching it changes nothing else."""

    @property
    def origin(self) -> str:
        return f"DestinationRule {_namespace(self.rule)}/{_name(self.rule)}"

    def note(self, area: str) -> str:
        head = f"{self.origin} (host {self.host}; {', '.join(self.places)}) will keep mTLS: {self.why}."
        if self.patchable:
            return f"{head} The plan patches its TLS to DISABLE (the rollback restores it)."
        return (f"{head} Its host also covers services outside {area}, so the plan leaves it alone: those "
                "clients keep failing until it is narrowed or changed by hand.")


def rules_keeping_mtls(rules: Sequence[Mapping[str, Any]], area: str, home: str, root: str) -> list[KeepsMtls]:
    """Existing rules (not meshbot's own) that win over meshbot's rule for some client and keep mTLS."""
    found = []
    for rule in sorted(rules, key=lambda r: (_namespace(r), _name(r))):
        if _name(rule) == PLAINTEXT_RULE and _namespace(rule) == home:
            continue
        why = wins_over_ours(rule, area, home, root)
        places = mtls_kept_by(rule) if why else []
        if why and places:
            host = resolved_host(rule)
            found.append(KeepsMtls(rule, host, why, tuple(places), within(host, area)))
    return found
