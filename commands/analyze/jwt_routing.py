"""VirtualServices routing on JWT claims at a gateway that validates no JWT (IST0149).

istiod turns an ``@request.auth.claims.<name>`` header match into a match on the claims the
gateway's jwt_authn filter writes; without a RequestAuthentication on the gateway pods no
claims are written, so the route never matches and the requests fall through (404 NR when no
other route takes them).  Follows istio/istio
pkg/config/analysis/analyzers/virtualservice/jwtclaimroute.go and pkg/jwt/routing.go.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from commands.analyze import analyzer, report
from commands.analyze.gateway import istio_gateways
from commands.checks.registry import CheckContext
from commands.cluster.selectors import matches
from commands.findings import Finding
from commands.shapes import mapping, mappings

CLAIM_HEADER = "@request.auth.claims"
MESH_GATEWAY = "mesh"
# jwtclaimroute.go reads RequestAuthentications of the constant istio-system namespace, not the root namespace.
ISTIO_SYSTEM = "istio-system"


def is_claim_header(name: str) -> bool:
    """pkg/jwt/routing.go ToRoutingClaim: ``@request.auth.claims.a.b`` or ``@request.auth.claims[a][b]``."""
    if not name.lower().startswith(CLAIM_HEADER):
        return False
    rest = name[len(CLAIM_HEADER):]
    return (rest.startswith(".") and len(rest) > 1) or (rest.startswith("[") and rest.endswith("]") and len(rest) > 2)


def claim_key(virtual_service: Mapping[str, Any]) -> str | None:
    """The first header (or withoutHeaders) key of an HTTP match that routes on a JWT claim."""
    for route in mappings(virtual_service.get("http")):
        for match in mappings(route.get("match")):
            for section in ("headers", "withoutHeaders"):
                key = next((str(k) for k in mapping(match.get(section)) if is_claim_header(str(k))), None)
                if key:
                    return key
    return None


@analyzer("virtualservice.JWTClaimRouteAnalyzer", inputs=("VirtualService", "RequestAuthentication", "Gateway", "Pod"))
def jwt_claim_routes(ctx: CheckContext) -> list[Finding]:
    """IST0149 per gateway pod a claim-routing VirtualService reaches that no RequestAuthentication selects."""
    authentications: dict[str, list[Mapping[str, str]]] = {}
    for ra in ctx.snapshot.of_kind("RequestAuthentication"):
        labels = mapping(mapping(ra.spec.get("selector")).get("matchLabels"))
        authentications.setdefault(ra.namespace or "", []).append({str(k): str(v) for k, v in labels.items()})
    gateways = {(g.namespace, g.name): g for g in istio_gateways(ctx.snapshot)}
    findings: list[Finding] = []
    for vs in ctx.snapshot.of_kind("VirtualService"):
        key = claim_key(vs.spec)
        if key is None:
            continue
        for reference in (str(g) for g in vs.spec.get("gateways") or () if str(g) != MESH_GATEWAY):
            namespace, _, name = reference.rpartition("/")
            gateway = gateways.get((namespace or vs.namespace, name))
            if gateway is None:
                continue  # a missing gateway is IST0101's
            selector = {str(k): str(v) for k, v in mapping(gateway.spec.get("selector")).items()}
            for pod in ctx.snapshot.of_kind("Pod"):
                if not matches(selector, pod.labels):
                    continue
                selectors = authentications.get(ISTIO_SYSTEM, []) + authentications.get(pod.namespace or "", [])
                if not any(matches(s, pod.labels) for s in selectors):
                    findings.append(report("IST0149", vs, key=key, gateway=gateway.qualified_name, pod=pod.name))
    return findings
