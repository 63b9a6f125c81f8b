"""Many proxies rejecting the same pushed config are one cause, named after the resource that produced it.

istiod builds each proxy's config from the same Istio resources, so one bad EnvoyFilter (or Sidecar, Gateway)
makes every proxy it applies to reject the push with the same Envoy error (pilot/pkg/xds/ads.go logs each NACK;
Envoy's text comes from source/common/config/grpc_mux_impl.cc "gRPC config for ... rejected").  Listing N
rejections as N probable causes hides that; this module folds them into one finding (MB2012) with the count and,
when the snapshot holds it, the resource that produced the config:

- an EnvoyFilter that applies to the rejecting proxies (its workloadSelector or targetRefs select their pods, or
  it has neither and sits in their namespace or the root namespace: pilot/pkg/model/envoyfilter.go) and whose
  patches mention something the error names (a filter or extension name, a listener or cluster name);
- failing that, the only EnvoyFilter that applies to all of them (medium confidence);
- for a rejected listener on port P, a Gateway with a server on port P whose selector picks the proxies
  (pilot/pkg/networking/core/gateway.go builds one listener per port).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from commands import codes
from commands.cluster.selectors import matches
from commands.cluster.snapshot import Resource, Snapshot
from commands.findings import Finding, Remediation

REJECTION_CODES = frozenset({"MB2002"})
# Listener names embed the pod's address (10.244.1.7_15006), so no word boundary after it.
_ADDRESS = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_NONCE = re.compile(r"\b(nonce|version)[ :=]+\S+", re.IGNORECASE)
# Names an Envoy error can carry that an EnvoyFilter's patch also spells: extension names (envoy.filters.http.lua),
# type URLs, listener names (0.0.0.0_8443) and cluster names (outbound|8080||host).
_TOKENS = re.compile(r"(?:[a-z0-9_]+\.){2,}[a-z0-9_]+|type\.googleapis\.com/[\w.]+|\b[\w.]+_\d{2,5}\b|"
                     r"(?:inbound|outbound)\|\d+\|[^|\s]*\|[\w.-]+")
_LISTENER_PORT = re.compile(r"listener\(s\) [\d.:\[\]a-f]+_(\d{2,5})")


def error_key(error: str) -> str:
    """The rejection text with what differs between proxies (addresses, nonces) blanked."""
    return _NONCE.sub(r"\1 *", _ADDRESS.sub("<ip>", " ".join(error.split())))


@dataclass(frozen=True)
class Producer:
    resource: Resource
    confidence: str
    why: str


def group_rejections(findings: Sequence[Finding], snapshot: Snapshot) -> list[Finding]:
    """One MB2012 per group of at least two proxies rejecting the same config, or per rejection whose producing
    resource can be named."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        if finding.code in REJECTION_CODES and finding.evidence.get("last_error"):
            types = str(finding.message.split(" the ", 1)[-1].split(" config", 1)[0])
            groups.setdefault((types, error_key(str(finding.evidence["last_error"]))), []).append(finding)
    out = []
    for (types, _), members in sorted(groups.items(), key=lambda item: -len(item[1])):
        error = str(members[0].evidence["last_error"])
        pods = [pod for pod in (_pod_of(m, snapshot) for m in members) if pod is not None]
        producer = producing_resource(error, pods, snapshot)
        if len(members) < 2 and producer is None:
            continue
        out.append(_grouped(types, error, members, producer, snapshot))
    return out


def _pod_of(finding: Finding, snapshot: Snapshot) -> Resource | None:
    kind, _, rest = finding.origin.partition(" ")
    namespace, _, name = rest.partition("/")
    return snapshot.get("Pod", namespace, name) if kind == "Pod" and name else None


def producing_resource(error: str, pods: Sequence[Resource], snapshot: Snapshot) -> Producer | None:
    if not pods:
        return None
    filters = [f for f in snapshot.of_kind("EnvoyFilter") if all(_applies(f, pod, snapshot) for pod in pods)]
    tokens = set(_TOKENS.findall(error))
    named = [f for f in filters if tokens & _patch_tokens(f)]
    if len(named) == 1:
        shared = sorted(tokens & _patch_tokens(named[0]))
        return Producer(named[0], "high", f"its patches name {', '.join(shared)}, which the error names")
    gateway = _gateway_for_listener(error, pods, snapshot)
    if gateway is not None:
        return gateway
    if len(filters) == 1:
        return Producer(filters[0], "medium", "it is the only EnvoyFilter that applies to every rejecting proxy")
    return None


def _applies(envoy_filter: Resource, pod: Resource, snapshot: Snapshot) -> bool:
    spec = envoy_filter.spec
    selector = (spec.get("workloadSelector") or {}).get("labels")
    if spec.get("targetRefs"):
        return False  # targetRefs pick Gateways/Services, not sidecars by label: not judged here
    if envoy_filter.namespace == snapshot.istio_namespace and not selector:
        return True
    if envoy_filter.namespace not in (pod.namespace, snapshot.istio_namespace):
        return False
    return not selector or matches(selector, pod.labels)


def _patch_tokens(envoy_filter: Resource) -> set[str]:
    return set(_TOKENS.findall(json.dumps(envoy_filter.spec.get("configPatches") or [])))


def _gateway_for_listener(error: str, pods: Sequence[Resource], snapshot: Snapshot) -> Producer | None:
    match = _LISTENER_PORT.search(error)
    if not match:
        return None
    port = int(match.group(1))
    candidates = []
    for gateway in snapshot.of_kind("Gateway"):
        selector = gateway.spec.get("selector") or {}
        if not selector or not all(matches(selector, pod.labels) for pod in pods):
            continue
        ports = {int((server.get("port") or {}).get("number", 0)) for server in gateway.spec.get("servers") or ()}
        if port in ports:
            candidates.append(gateway)
    if len(candidates) != 1:
        return None
    return Producer(candidates[0], "medium", f"it is the Gateway with a server on port {port}, the rejected listener")


def _grouped(types: str, error: str, members: Sequence[Finding], producer: Producer | None,
             snapshot: Snapshot) -> Finding:
    proxies = [m.origin for m in members]
    if producer:
        resource = producer.resource
        source = f"{resource.kind} {resource.qualified_name} ({producer.confidence} confidence: {producer.why})"
        remediation = Remediation(
            f"Fix or remove {resource.kind} {resource.qualified_name}: istiod pushes the config it produces to every "
            f"proxy it applies to and each rejects it; once it is valid the proxies acknowledge the next push. "
            "No restart helps: a restarted proxy is sent the same config",
            command=f"kubectl -n {resource.namespace} get {resource.kind.lower()} {resource.name} -o yaml")
    else:
        source = "a resource not in the snapshot (see the error)"
        remediation = Remediation(
            "Find the Istio resource named in the error (EnvoyFilter, Sidecar, Gateway, DestinationRule) and fix it; "
            "no restart helps, since a restarted proxy is sent the same config",
            command=members[0].remediation.command if members[0].remediation else None)
    return codes.finding(
        "MB2012", origin=f"{resource.kind} {resource.qualified_name}" if producer else members[0].origin,
        proxies=f"{len(members)} proxies reject" if len(members) > 1 else "1 proxy rejects", types=types, error=_shorten(error), source=source,
        evidence={"proxies": proxies, "error_key": error_key(error),
                  "producer": f"{producer.resource.kind} {producer.resource.qualified_name}" if producer else None},
        remediation=remediation)


def _shorten(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
