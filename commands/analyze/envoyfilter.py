"""EnvoyFilter analyzers: patch operations Istio ignores, or applies in an order nobody chose.

Mirrors istio/istio pkg/config/analysis/analyzers/envoyfilter/envoyfilter.go (EnvoyPatchAnalyzer).
A relative operation (INSERT_BEFORE/AFTER, REPLACE, REMOVE) finds its anchor by name in what the
earlier filters produced; without ``priority`` the order between EnvoyFilters is by creation time,
so the anchor may not exist yet and the patch is silently skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from commands.analyze import analyzer, report, unique
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Resource
from commands.findings import Finding
from commands.shapes import mapping, mappings

RELATIVE_OPERATIONS = frozenset({"INSERT_BEFORE", "INSERT_AFTER"})
ROUTE_LEVEL = frozenset({"ROUTE_CONFIGURATION", "HTTP_ROUTE"})
# REPLACE is implemented for these applyTo targets only (Istio's analyzer and networking/v1alpha3 docs).
REPLACEABLE = frozenset({"HTTP_FILTER", "NETWORK_FILTER", "VIRTUAL_HOST"})


def _priority(envoy_filter: Resource) -> int:
    value = envoy_filter.spec.get("priority")
    return value if isinstance(value, int) else 0


def _instance_name(patch: Mapping[str, Any]) -> str:
    """The filter a patch is about: ``patch.value.name``, else the listener filter chain's filter name."""
    value = mapping(mapping(patch.get("patch")).get("value"))
    if not value:
        return ""
    if value.get("name") is not None:
        return str(value["name"])
    filter_chain = mapping(mapping(mapping(patch.get("match")).get("listener")).get("filterChain"))
    return str(mapping(filter_chain.get("filter")).get("name") or "")


@analyzer("envoyfilter.EnvoyPatchAnalyzer", inputs=("EnvoyFilter",))
def envoy_patches(ctx: CheckContext) -> list[Finding]:
    """IST0151-IST0155 for each EnvoyFilter patch Istio would ignore or may apply out of order."""
    findings: list[Finding] = []
    # Filter names patched by an earlier EnvoyFilter restricted to a proxyVersion: during an upgrade
    # the versioned patch disappears, and a relative patch anchored on it stops applying (IST0155).
    versioned_names: list[str] = []
    for envoy_filter in ctx.snapshot.of_kind("EnvoyFilter"):
        findings.extend(_patch_findings(envoy_filter, versioned_names))
    return unique(findings)


def _patch_findings(envoy_filter: Resource, versioned_names: list[str]) -> list[Finding]:
    findings: list[Finding] = []
    for patch in mappings(envoy_filter.spec.get("configPatches")):
        if not patch.get("patch"):
            break  # istioctl stops at the first patch without a patch section
        operation = str(mapping(patch["patch"]).get("operation") or "")
        apply_to = str(patch.get("applyTo") or "")
        name = _instance_name(patch)
        relative = False
        if operation == "ADD" and apply_to in ROUTE_LEVEL:
            findings.append(report("IST0153", envoy_filter))
        elif operation == "REMOVE":
            if apply_to in ROUTE_LEVEL:
                findings.append(report("IST0154", envoy_filter))
            else:
                relative = True
        elif operation == "REPLACE":
            if apply_to not in REPLACEABLE:
                findings.append(report("IST0152", envoy_filter))
            else:
                relative = True
        elif operation in RELATIVE_OPERATIONS:
            relative = True
        if relative and _priority(envoy_filter) == 0:
            findings.append(report("IST0155" if name in versioned_names else "IST0151", envoy_filter))
        if mapping(mapping(patch.get("match")).get("proxy")).get("proxyVersion"):
            versioned_names.append(name)
    return findings
