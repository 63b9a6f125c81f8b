"""Kubernetes Warning Events as evidence: one line per reason and object, with counts and last seen.

The API server keeps Events for an hour by default (kube-apiserver ``--event-ttl``), so they are the
recent past of pods, workloads and the Istio namespace: an injection webhook refusing pods, a sidecar
failing its readiness probe, a volume Istio mounts that is missing, an OOM kill.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from commands import codes
from commands.clients.kube import ApiCall, KubeClient, failure_reason
from commands.errors import AccessDenied, ClusterError, NotFound, TransientError
from commands.findings import Finding
from commands.resources.kinds import KindInfo, kind_info
from commands.times import parse_rfc3339_or_none, rfc3339

MAX_EVENTS = 30
"""Lines of evidence kept, most recent first: a crash-looping Deployment alone can have hundreds of pods."""

# Why an Event matters to the mesh, matched on its reason and words of its message.  Sources:
# injection webhook failures, https://istio.io/latest/docs/ops/common-problems/injection/; the rest from
# Istio's injection template (manifests/charts/istio-control/istio-discovery/files/injection-template.yaml):
# istio-proxy's readiness probe is /healthz/ready on port 15021, the pod mounts the istio-ca-root-cert
# ConfigMap istiod writes into every namespace and a projected istio-token (audience istio-ca).
_MEANINGS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("FailedCreate", ("istio", "sidecar-injector", "webhook"),
     "the sidecar injection webhook refused or failed the pod: the workload cannot create pods"),
    ("Unhealthy", ("15021", "istio-proxy", "healthz/ready"), "the sidecar (istio-proxy) is not ready"),
    ("FailedMount", ("istio-ca-root-cert",), "istiod has not written istio-ca-root-cert into the namespace"),
    ("FailedMount", ("istio-token",), "the projected istio-token (audience istio-ca) cannot be mounted"),
    ("BackOff", ("istio-proxy", "discovery"), "a mesh container is crash-looping"),
    ("BackOff", (), "a container is crash-looping"),
    ("OOMKilling", (), "the kernel killed a process for memory"),
)


@dataclass(frozen=True)
class EventEvidence:
    reason: str
    object: str
    """``Pod shop/payments-7d4b9c-abcde``: the involved object, as finding origins name objects."""
    namespace: str
    message: str
    count: int
    last_seen: datetime | None
    type: str = "Warning"
    meaning: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "object": self.object, "type": self.type, "count": self.count,
                "last_seen": rfc3339(self.last_seen) if self.last_seen else None, "message": self.message,
                "meaning": self.meaning}


def summarize_events(events: Iterable[Mapping[str, Any]], namespaces: Sequence[str],
                     istio_namespace: str) -> list[EventEvidence]:
    """Events in scope (``namespaces``, all when empty, plus the Istio namespace and Node OOM kills), one per
    reason and object, Warning first, then the most recently seen."""
    wanted = set(namespaces) | {istio_namespace}
    merged: dict[tuple[str, str, str], EventEvidence] = {}
    for event in events:
        involved = event.get("involvedObject") or {}
        namespace = involved.get("namespace") or (event.get("metadata") or {}).get("namespace") or ""
        node_oom = involved.get("kind") == "Node" and event.get("reason") == "OOMKilling"
        if namespaces and namespace not in wanted and not node_oom:
            continue
        evidence = _evidence(event, involved, namespace)
        key = (evidence.type, evidence.reason, evidence.object)
        merged[key] = _merge(merged[key], evidence) if key in merged else evidence
    ordered = sorted(merged.values(), key=lambda e: (e.type != "Warning", -(e.last_seen.timestamp()
                                                                           if e.last_seen else 0), e.object))
    return ordered[:MAX_EVENTS]


def event_findings(evidence: Iterable[EventEvidence]) -> list[Finding]:
    return [codes.finding("MB6030", origin=e.object, reason=e.reason, object=e.object, count=e.count,
                          last_seen=rfc3339(e.last_seen) if e.last_seen else "unknown",
                          message=_one_line(e.message), evidence=e.to_dict())
            for e in evidence if e.type == "Warning"]


def read_events(client: KubeClient, namespaces: Sequence[str],
                istio_namespace: str) -> tuple[list[dict[str, Any]], list[Finding]]:
    """Warning Events of the namespaces in scope and the Istio namespace (all namespaces when none given).

    Only ``type=Warning`` is asked for (a field the core/v1 events API selects on: pkg/registry/core/event/
    strategy.go ToSelectableFields): Normal events are most of a busy cluster's and explain no outage.
    """
    events: list[dict[str, Any]] = []
    problems: list[Finding] = []
    for namespace in (sorted({*namespaces, istio_namespace}) if namespaces else [None]):
        try:
            events += client.list("Event", namespace, field_selector="type=Warning")
        except NotFound:
            continue
        except (ClusterError, TransientError) as exc:
            problems.append(unreadable("list", "Event", namespace, exc))
    return events, problems


def unreadable(verb: str, kind: str | KindInfo, namespace: str | None,
               error: ClusterError | TransientError) -> Finding:
    """MB0001 (RBAC) or MB0002 (unreachable) for a read the timeline could not make."""
    call = ApiCall(verb, kind if isinstance(kind, KindInfo) else kind_info(kind), namespace)
    code = "MB0001" if isinstance(error, AccessDenied) else "MB0002"
    return codes.finding(code, origin=call.path, verb=call.verb, resource=call.resource, scope=call.scope,
                         reason=failure_reason(error))


def _evidence(event: Mapping[str, Any], involved: Mapping[str, Any], namespace: str) -> EventEvidence:
    kind, name = involved.get("kind") or "Object", involved.get("name") or "?"
    # A Node's events live in the default namespace, but the Node itself has none.
    shown = involved.get("namespace") or ""
    series = event.get("series") or {}
    count = int(series.get("count") or event.get("count") or 1)
    last = (parse_rfc3339_or_none(series.get("lastObservedTime")) or parse_rfc3339_or_none(event.get("lastTimestamp"))
            or parse_rfc3339_or_none(event.get("eventTime"))
            or parse_rfc3339_or_none(event.get("firstTimestamp")))
    reason, message = event.get("reason") or "", event.get("message") or ""
    return EventEvidence(reason=reason, object=f"{kind} {shown}/{name}" if shown else f"{kind} {name}",
                         namespace=namespace, message=message, count=count, last_seen=last,
                         type=event.get("type") or "Normal", meaning=_meaning(reason, message))


def _merge(first: EventEvidence, second: EventEvidence) -> EventEvidence:
    latest = second if (second.last_seen or datetime.min.astimezone()) >= (
        first.last_seen or datetime.min.astimezone()) else first
    return EventEvidence(reason=first.reason, object=first.object, namespace=first.namespace,
                         message=latest.message, count=first.count + second.count, last_seen=latest.last_seen,
                         type=first.type, meaning=first.meaning or second.meaning)


def _meaning(reason: str, message: str) -> str:
    lowered = message.lower()
    for known, words, meaning in _MEANINGS:
        if reason == known and (not words or any(w in lowered for w in words)):
            return meaning
    return ""


def _one_line(message: str, limit: int = 200) -> str:
    text = " ".join(message.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
