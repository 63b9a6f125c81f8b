"""Which finding explains which: the rules triage links findings with, and the facts they read off findings.

Pure.  Each rule yields ``Link(cause, effect, why, confidence)``: "an expired root explains this sidecar's failed
handshakes, because …".  ``commands.triage`` turns the links into probable causes and first steps; every rule cites
the Istio or Envoy behaviour it relies on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from commands.findings import Finding


class Confidence(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        return {Confidence.HIGH: 0, Confidence.MEDIUM: 1, Confidence.LOW: 2}[self]


@dataclass(frozen=True)
class Link:
    """``cause`` explains ``effect``; ``why`` is one sentence a human can check."""

    cause: Finding
    effect: Finding
    why: str
    confidence: Confidence


# -- facts read off findings ------------------------------------------------------------------

_POD_ORIGIN = re.compile(r"^Pod (?P<ns>[a-z0-9-]+)/(?P<pod>[a-z0-9.-]+)$")
# Envoy names Istio's outbound clusters ``outbound|PORT|SUBSET|HOST`` (istio pilot/pkg/model/service.go
# BuildSubsetKey); the host is the Kubernetes Service FQDN ``NAME.NS.svc.DOMAIN``.
_OUTBOUND_HOST = re.compile(r"^outbound\|\d+\|[^|]*\|(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc\.")
# Pods of a Deployment are named ``DEPLOYMENT-<replicaset hash>-<pod hash>``.
_POD_OF_DEPLOYMENT = re.compile(r"^(?P<workload>.+)-[a-z0-9]{6,10}-[a-z0-9]{5}$")


def namespace_of(finding: Finding) -> str | None:
    """The namespace a finding is about (``Kind ns/name`` origins, ``Namespace ns``)."""
    kind, _, rest = finding.origin.partition(" ")
    if kind == "Namespace":
        return rest or None
    if "/" in rest:
        return rest.split("/", 1)[0]
    return None


def workload_of(finding: Finding) -> tuple[str, str] | None:
    """(namespace, workload) for a finding about a pod of a Deployment."""
    match = _POD_ORIGIN.match(finding.origin)
    if not match:
        return None
    owner = _POD_OF_DEPLOYMENT.match(match["pod"])
    return (match["ns"], owner["workload"] if owner else match["pod"])


def upstream_of(finding: Finding) -> tuple[str, str] | None:
    """(namespace, service) an Envoy cluster finding is about."""
    match = _OUTBOUND_HOST.match(str(finding.evidence.get("cluster", "")))
    return (match["ns"], match["svc"]) if match else None


def _is_mesh_root(finding: Finding) -> bool:
    role = finding.evidence.get("role")
    if role is not None:
        return role in ("mesh-root", "mesh_root")
    return finding.message.startswith("Mesh root")


def is_istiod(finding: Finding) -> bool:
    return finding.message.startswith("istiod ") or "istiod" in finding.origin.split("/")[-1][:7]


ROOT_EXPIRED = {"MB3001"}
ROOT_MISMATCH = {"MB3010"}
CONTROL_PLANE_DOWN = {"MB1001", "MB1002", "MB1003", "MB1006", "MB2005"}
SIDECAR_BROKEN = {"MB1011", "MB1012", "MB1013"}
WORKLOAD_CERT_TROUBLE = {"MB3006", "MB3014"}
CALLER_SYMPTOMS = {"MB4001", "MB4002", "MB4003", "MB4008", "MB4013", "MB4014", "MB4015", "MB4016", "MB4017",
                   "MB4018"}
"""What a caller's Envoy sees of a failing upstream: overflows, 5xx share, retries, and the response-flag findings
(UH, UF, TLS, URX, UT, UC) of commands/checks/envoy, each naming the upstream cluster in its evidence."""
AUTHZ_DENIES = {"MB7001", "MB7002"}
"""An AuthorizationPolicy that denies every request to the workloads it selects (commands/analyze/authorization.py)."""
SYNC_TROUBLE = {"MB2001", "MB2002", "MB2003", "MB2006", "MB2007"}


# -- the rules: each yields links ---------------------------------------------------------------

Rule = Callable[[Sequence[Finding]], Iterable[Link]]


def root_trust_is_broken(findings: Sequence[Finding]) -> Iterable[Link]:
    """An expired mesh root (everywhere) or a namespace whose root differs (there) breaks mTLS.

    Envoy refuses a peer chain anchored in an expired or unknown root (Istio: "Root certificate
    expiry", https://istio.io/latest/docs/ops/configuration/security/root-transition/), so handshakes
    fail, sidecars cannot get a workload certificate over SDS and callers see 503s
    (https://istio.io/latest/docs/ops/common-problems/security-issues/#mutual-tls-errors).
    """
    for cause in findings:
        if cause.code in ROOT_EXPIRED and _is_mesh_root(cause):
            scope, where = None, "mesh-wide"
        elif cause.code in ROOT_MISMATCH:
            scope, where = namespace_of(cause), f"in {namespace_of(cause)}"
        else:
            continue
        for effect in findings:
            if effect is cause or effect.code not in SIDECAR_BROKEN | WORKLOAD_CERT_TROUBLE | CALLER_SYMPTOMS:
                continue
            effect_ns = (upstream_of(effect) or (namespace_of(effect), ""))[0]
            if scope is not None and effect_ns != scope and namespace_of(effect) != scope:
                continue
            confidence = Confidence.MEDIUM if effect.code in CALLER_SYMPTOMS else Confidence.HIGH
            yield Link(cause, effect, f"mTLS handshakes {where} fail while the root is not trusted", confidence)
        if scope is None:
            yield from _proxies_cannot_trust_istiod(cause, findings)


def _proxies_cannot_trust_istiod(root: Finding, findings: Sequence[Finding]) -> Iterable[Link]:
    """With the default PILOT_CERT_PROVIDER=istiod, istiod's xDS/CA port 15012 serves a certificate its own CA
    signs ("Generating istiod-signed cert", pilot/pkg/bootstrap/certcontroller.go initDNSCerts), and
    istio-agent verifies it against the mesh root it was given.  Once that root has expired, proxies that
    reconnect (istiod restarting is enough) can neither fetch config nor renew their certificate."""
    for effect in findings:
        if effect.code in SYNC_TROUBLE and not effect.evidence.get("last_error"):
            yield Link(root, effect, "proxies cannot verify istiod's certificate, which the expired root signed",
                       Confidence.MEDIUM)


def control_plane_is_down(findings: Sequence[Finding]) -> Iterable[Link]:
    """istiod not ready / OOMKilled / missing: proxies keep their last config and stop receiving pushes
    and new certificates (istiod is both the xDS server and the CA:
    https://istio.io/latest/docs/ops/deployment/architecture/#istiod)."""
    for cause in findings:
        if cause.code not in CONTROL_PLANE_DOWN or not (is_istiod(cause) or cause.code in {"MB1006", "MB2005"}):
            continue
        for effect in findings:
            if effect is cause:
                continue
            if effect.code in SYNC_TROUBLE and not effect.evidence.get("last_error"):
                # A NACK quoting Envoy's error is the config's fault, not istiod's (pilot/pkg/xds/ads.go).
                yield Link(cause, effect, "istiod cannot push or collect acknowledgements while it is down",
                           Confidence.HIGH)
            elif effect.code == "MB3006":
                yield Link(cause, effect, "workload certificates cannot rotate without istiod, the mesh CA",
                           Confidence.HIGH)
            elif (cause.code == "MB1002" and effect.origin == cause.origin
                  and effect.code in {"MB1001", "MB1003", "MB1005"}):
                yield Link(cause, effect, "the OOMKilled container restarts and is not ready meanwhile",
                           Confidence.HIGH)


def upstream_workload_is_broken(findings: Sequence[Finding]) -> Iterable[Link]:
    """Callers of a workload whose sidecar crash-loops or is not ready see 503s and open breakers:
    its endpoints are not ready, so Envoy has no healthy upstream (response flag UH,
    https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage)."""
    for cause in findings:
        if cause.code not in SIDECAR_BROKEN:
            continue
        workload = workload_of(cause)
        if workload is None:
            continue
        for effect in findings:
            if effect.code in CALLER_SYMPTOMS and upstream_of(effect) == workload:
                yield Link(cause, effect, f"{workload[1]} in {workload[0]} has no healthy sidecar to answer",
                           Confidence.MEDIUM)


def one_config_is_rejected_everywhere(findings: Sequence[Finding]) -> Iterable[Link]:
    """Proxies rejecting the same push are one cause: the resource that produced the config (MB2012,
    commands/checks/rejections.py), not N proxies each needing attention (istiod sends every proxy the config
    built from the same resources: pilot/pkg/xds/ads.go)."""
    for cause in findings:
        if cause.code != "MB2012":
            continue
        # A proxy has one MB2002 (its last rejection), so the proxies named are exactly the grouped findings.
        proxies = set(cause.evidence.get("proxies") or ())
        for effect in findings:
            # MB4025 is the same rejection seen from the proxy's side (Envoy's lds/cds update_rejected counters).
            if effect.code in {"MB2002", "MB4025"} and effect.origin in proxies:
                yield Link(cause, effect, "every one of these proxies rejects the same config from one resource",
                           Confidence.HIGH)


def policy_denies_the_requests(findings: Sequence[Finding]) -> Iterable[Link]:
    """A sidecar answering 403 RBAC: access denied is explained by the policy that denies it: MB7004 names it for that
    pod (commands.authz.explain), MB7001/MB7002 for every workload of their namespace they select (Envoy's RBAC filter
    answers 403 "RBAC: access denied", envoyproxy/envoy docs/root/configuration/http/http_filters/rbac_filter.rst)."""
    for cause in findings:
        if cause.code not in AUTHZ_DENIES | {"MB7004"}:
            continue
        for effect in findings:
            if effect.code != "MB4022" or effect is cause:
                continue
            same_pod = cause.code == "MB7004" and effect.origin == cause.origin
            same_namespace = cause.code in AUTHZ_DENIES and namespace_of(effect) == namespace_of(cause)
            if same_pod or same_namespace:
                yield Link(cause, effect, "the policy denies these requests, so the sidecar answers 403",
                           Confidence.HIGH if same_pod else Confidence.MEDIUM)


def same_failure_seen_by_many_callers(findings: Sequence[Finding]) -> Iterable[Link]:
    """Several callers failing the same way to the same service are one problem at that service, not one per
    caller: the first (most severe, in report order) stands for the rest, which it explains."""
    groups: dict[tuple[str, tuple[str, str]], list[Finding]] = {}
    for finding in findings:
        upstream = upstream_of(finding)
        if finding.code in CALLER_SYMPTOMS and upstream is not None:
            groups.setdefault((finding.code, upstream), []).append(finding)
    for (_, (namespace, service)), same in groups.items():
        for effect in same[1:]:
            yield Link(same[0], effect, f"{len(same)} callers see the same failure calling {service} in {namespace}",
                       Confidence.HIGH)


def destination_rule_contradicts_the_destination(findings: Sequence[Finding]) -> Iterable[Link]:
    """A DestinationRule sending plaintext to STRICT pods (MB5010) or Istio mTLS to pods without a sidecar (MB5011)
    explains its callers' failures to that service: Istio's "503 errors after setting destination rule"
    (https://istio.io/latest/docs/ops/common-problems/network-issues/#503-errors-after-setting-destination-rule)."""
    for cause in findings:
        if cause.code not in {"MB5010", "MB5011"}:
            continue
        namespace, _, service = str(cause.evidence.get("service", "")).partition("/")
        for effect in findings:
            if effect.code in CALLER_SYMPTOMS and upstream_of(effect) == (namespace, service):
                yield Link(cause, effect, f"the DestinationRule's tls mode for {service} in {namespace} does not "
                           "match what its pods accept", Confidence.HIGH)


def proxies_cannot_reach_istiod(findings: Sequence[Finding]) -> Iterable[Link]:
    """Proxies connected to no istiod (MB2015, MB2016, commands/checks/disconnected.py) get no certificate renewal:
    istio-agent asks istiod's CA over the same port 15012 (https://istio.io/latest/docs/ops/deployment/architecture/
    #istiod), so their ageing workload certificates are that problem, not their own."""
    for cause in findings:
        if cause.code not in {"MB2015", "MB2016"}:
            continue
        pods = {f"Pod {name}" for name in cause.evidence.get("not_connected") or ()}
        for effect in findings:
            if effect.code in WORKLOAD_CERT_TROUBLE and effect.origin in pods:
                yield Link(cause, effect, "the proxy cannot reach istiod's CA to renew its certificate",
                           Confidence.HIGH)


RULES: tuple[Rule, ...] = (root_trust_is_broken, control_plane_is_down, upstream_workload_is_broken,
                           one_config_is_rejected_everywhere, policy_denies_the_requests,
                           same_failure_seen_by_many_callers, destination_rule_contradicts_the_destination,
                           proxies_cannot_reach_istiod)
