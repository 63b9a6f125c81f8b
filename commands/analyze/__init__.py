"""Istio configuration analysis compatible with ``istioctl analyze``: same codes, levels, meaning.

Each analyzer family lives in its own module and registers functions with
``@analyzer(name, inputs=...)``.  An analyzer yields findings built with
``report(code, resource, **args)``.  When one of its input kinds could not be
read (a 403, say) the analyzer is skipped with an Info finding instead of
reporting every reference as missing.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from commands import codes
from commands.checks.registry import CheckContext, check
from commands.cluster.snapshot import Resource, Snapshot
from commands.cluster.sources.files import FileSnapshot
from commands.findings import Finding, Remediation

log = logging.getLogger(__name__)

AnalyzerFunction = Callable[[CheckContext], Iterable[Finding]]

# Modules holding analyzers; each registers itself on import.
ANALYZER_MODULES = (
    "commands.analyze.virtualservice",
    "commands.analyze.destinationrule",
    "commands.analyze.gateway",
    "commands.analyze.injection",
    "commands.analyze.sidecar",
    "commands.analyze.service",
    "commands.analyze.workload_selector",
    "commands.analyze.route_rules",
    "commands.analyze.serviceentry",
    "commands.analyze.envoyfilter",
    "commands.analyze.deployment",
    "commands.analyze.authorization",
    "commands.analyze.conditions",
    "commands.analyze.k8sgateway",
    "commands.analyze.webhook",
    "commands.analyze.jwt_routing",
    "commands.analyze.external_name",
    "commands.analyze.external_control_plane",
)

# Every kind any analyzer reads; the live source lists exactly these for `analyze`.
ANALYZE_KINDS = (
    "Namespace", "Pod", "Service", "Deployment", "Secret", "ConfigMap", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Sidecar", "WorkloadEntry",
    "EnvoyFilter", "PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication", "Telemetry",
    "WasmPlugin", "HTTPRoute", "GRPCRoute",
)


@dataclass(frozen=True)
class AnalyzerSpec:
    name: str
    function: AnalyzerFunction
    inputs: tuple[str, ...]


ANALYZERS: dict[str, AnalyzerSpec] = {}


def analyzer(name: str, *, inputs: Iterable[str]) -> Callable[[AnalyzerFunction], AnalyzerFunction]:
    def register(function: AnalyzerFunction) -> AnalyzerFunction:
        ANALYZERS[name] = AnalyzerSpec(name, function, tuple(inputs))
        return function
    return register


def report(code: str, resource: Resource, *, evidence: dict[str, Any] | None = None,
           remediation: Remediation | None = None, **args: Any) -> Finding:
    """A finding about ``resource``: origin and ``file:line`` reference come from it."""
    return codes.finding(code, origin=resource.origin, reference=resource.source, evidence=evidence,
                         remediation=remediation, **args)


def unique(findings: Iterable[Finding]) -> list[Finding]:
    """Drop repeats of the same message on the same object, as istioctl's output does."""
    seen: dict[tuple[str, str, str], Finding] = {}
    for finding in findings:
        seen.setdefault((finding.code, finding.origin, finding.message), finding)
    return list(seen.values())


def origin_namespace(finding: Finding) -> str | None:
    """The namespace a finding is about (a Namespace's own name for ``Namespace x``)."""
    kind, _, rest = finding.origin.partition(" ")
    if "/" in rest:
        return rest.split("/", 1)[0]
    return rest if kind == "Namespace" else None


def load_analyzers() -> None:
    for module in ANALYZER_MODULES:
        importlib.import_module(module)


def run_analyzers(ctx: CheckContext, *, only: Iterable[str] | None = None) -> list[Finding]:
    """Every registered analyzer (or the ``only`` named ones, like ``istioctl analyze`` with a selection)."""
    load_analyzers()
    ctx = with_offline_defaults(ctx)
    selected = set(only) if only is not None else None
    findings: list[Finding] = []
    for spec in ANALYZERS.values():
        if selected is not None and spec.name not in selected:
            continue
        unreadable = [k for k in spec.inputs if not ctx.snapshot.can_trust_absence(k)]
        if unreadable:
            findings.append(codes.finding(
                "MB0004", check="analyze", origin=f"analyzer {spec.name}", check_name=f"analyzer {spec.name}",
                reason=f"could not read {', '.join(unreadable)}"))
            continue
        findings.extend(_run_one(spec, ctx))
    return [f for f in findings if ctx.namespace is None or concerns(f, ctx.namespace)]


AFFECTED_NAMESPACES = "affected_namespaces"
"""Evidence key: namespaces an object elsewhere acts on (a root-namespace policy applies mesh-wide)."""


def concerns(finding: Finding, namespace: str) -> bool:
    """Whether a finding belongs in a run scoped to ``namespace``."""
    return origin_namespace(finding) in (None, namespace) or namespace in finding.evidence.get(AFFECTED_NAMESPACES, ())


def with_offline_defaults(ctx: CheckContext) -> CheckContext:
    """Add the objects a files-only ``istioctl analyze`` assumes (its default ingress gateway).

    Only a FileSnapshot carries them, so a live cluster is analyzed exactly as it is.  They
    stand in for an ingress gateway the files leave out (Istio's own reason for them), so files
    that hold an ``istio: ingressgateway`` pod get none: the default Service's ports would
    otherwise hide a port missing from the real one (IST0162).  An object of the same
    kind/namespace/name in the files always wins over the default.
    """
    assumed = ctx.snapshot.assumed if isinstance(ctx.snapshot, FileSnapshot) else ()
    if any(pod.labels.get("istio") == "ingressgateway" for pod in ctx.snapshot.of_kind("Pod")):
        return ctx
    extra = [r for r in assumed if ctx.snapshot.get(r.kind, r.namespace, r.name) is None]
    if not extra:
        return ctx
    snapshot = ctx.snapshot
    merged = Snapshot([*snapshot, *extra], istio_namespace=snapshot.istio_namespace,
                      read_problems=list(snapshot.read_problems), unreadable_kinds=set(snapshot.unreadable_kinds),
                      mesh_config=snapshot.mesh_config)
    return replace(ctx, snapshot=merged)


def _run_one(spec: AnalyzerSpec, ctx: CheckContext) -> list[Finding]:
    """One analyzer; a crash on odd input costs only its own findings, reported as MB0005."""
    try:
        return list(spec.function(ctx))
    except Exception as exc:
        log.exception("analyzer %s failed", spec.name)
        return [codes.finding("MB0005", check="analyze", origin=f"analyzer {spec.name}",
                              check_name=f"analyzer {spec.name}", reason=f"{type(exc).__name__}: {exc}")]


@check("analyze", kinds=ANALYZE_KINDS, summary="Istio configuration analysis (istioctl analyze codes)")
def analyze(ctx: CheckContext) -> list[Finding]:
    return run_analyzers(ctx)
