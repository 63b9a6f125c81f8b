"""What changed, when and by whom: mesh config, injection labels, rollouts, istiod restarts, mesh root certs.

Times and managers come from ``metadata.managedFields`` (server-side apply's record: one entry per manager
and operation, with the time it last wrote, https://kubernetes.io/docs/reference/using-api/server-side-apply/
#managed-fields), so a change reads "updated by argocd-controller at 02:39"; it is the *last* write of
each manager, not a history.  ``commands.cluster.sources.kube`` strips managedFields from every object of
the snapshot (often the largest part of an object, and no check reads it); the timeline reads its own
narrow lists instead (the mesh kinds, Namespaces, ReplicaSets and Deployments of the namespaces in scope,
istiod's pods, one ConfigMap) and turns each object into a few ``Change`` records at once, so no
managedFields outlive one list call and the shared snapshot stays as small as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from commands.certificates.x509 import CertificateError, parse_pem_bundle
from commands.clients.kube import KubeClient
from commands.errors import ClusterError, NotFound, TransientError
from commands.findings import Finding
from commands.resources.kinds import KindInfo
from commands.telemetry.events import unreadable
from commands.times import parse_rfc3339_or_none, rfc3339

MESH_KINDS = ("VirtualService", "DestinationRule", "PeerAuthentication", "AuthorizationPolicy", "EnvoyFilter",
              "Sidecar", "Gateway", "Telemetry", "ServiceEntry")
"""The Istio kinds whose change alters what proxies do (istio.io/latest/docs/reference/config/)."""
INJECTION_LABELS = ("istio-injection", "istio.io/rev")
"""Namespace labels the injection webhook selects on (its namespaceSelector in Istio's
mutatingwebhook.yaml)."""
REPLICA_SETS = KindInfo("ReplicaSet", "apps", "v1", "replicasets")
ROOT_CERT_CONFIGMAP = "istio-ca-root-cert"
ROOT_CERT_KEY = "root-cert.pem"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


class ChangeKind:
    CONFIG = "config"
    INJECTION = "injection"
    ROLLOUT = "rollout"
    RESTART = "restart"
    CERTIFICATE = "certificate"


@dataclass(frozen=True, order=True)
class Change:
    at: datetime
    kind: str
    """``ChangeKind``: config, injection, rollout, restart or certificate."""
    object: str
    """``AuthorizationPolicy shop/deny-all``: named as finding origins name objects."""
    what: str
    manager: str | None = None

    @property
    def namespace(self) -> str | None:
        rest = self.object.partition(" ")[2]
        return rest.split("/", 1)[0] if "/" in rest else (rest if self.object.startswith("Namespace ") else None)

    def line(self) -> str:
        by = f" by {self.manager}" if self.manager else ""
        return f"{rfc3339(self.at)}  {self.object} {self.what}{by}"

    def to_dict(self) -> dict[str, Any]:
        return {"at": rfc3339(self.at), "kind": self.kind, "object": self.object, "what": self.what,
                "manager": self.manager}


# -- from objects (pure) -----------------------------------------------------------------------------------


def config_changes(obj: Mapping[str, Any]) -> list[Change]:
    """A mesh config object's creation and each manager's last write of its spec (status writes skipped)."""
    metadata = obj.get("metadata") or {}
    name = _name(obj)
    created = parse_rfc3339_or_none(metadata.get("creationTimestamp"))
    found = []
    for entry in _writes(metadata):
        verb = "created" if created and entry[0] == created else (
            "applied" if entry[2] == "Apply" else "updated")
        found.append(Change(entry[0], ChangeKind.CONFIG, name, verb, entry[1]))
    if created and not any(c.at == created for c in found):
        found.append(Change(created, ChangeKind.CONFIG, name, "created"))
    return found


def injection_changes(namespace: Mapping[str, Any]) -> list[Change]:
    """When a manager last set a Namespace's injection labels, with the value they have now."""
    metadata = namespace.get("metadata") or {}
    labels = metadata.get("labels") or {}
    found = []
    for entry in metadata.get("managedFields") or []:
        touched = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        at = parse_rfc3339_or_none(entry.get("time"))
        for label in INJECTION_LABELS:
            if f"f:{label}" in touched and at:
                value = labels.get(label)
                what = f"label {label}={value} set" if value is not None else f"label {label} removed"
                found.append(Change(at, ChangeKind.INJECTION, f"Namespace {metadata.get('name')}", what,
                                    entry.get("manager")))
    return found


def rollout_changes(replica_set: Mapping[str, Any], deployments: Mapping[tuple[str, str], Mapping[str, Any]]
                    ) -> list[Change]:
    """A ReplicaSet's creation as its Deployment's rollout, credited to whoever last wrote the Deployment."""
    metadata = replica_set.get("metadata") or {}
    created = parse_rfc3339_or_none(metadata.get("creationTimestamp"))
    owner = next((o.get("name") for o in metadata.get("ownerReferences") or [] if o.get("kind") == "Deployment"),
                 None)
    if not created or not owner:
        return []
    namespace = metadata.get("namespace") or ""
    revision = (metadata.get("annotations") or {}).get(REVISION_ANNOTATION)
    deployment = deployments.get((namespace, owner)) or {}
    # The Deployment's spec writer at or before the ReplicaSet's creation started the rollout; the
    # ReplicaSet itself is always written by kube-controller-manager.
    writers = [w for w in _writes(deployment.get("metadata") or {}) if w[0] <= created]
    manager = max(writers)[1] if writers else None
    what = f"rolled out ReplicaSet {metadata.get('name')}" + (f" (revision {revision})" if revision else "")
    return [Change(created, ChangeKind.ROLLOUT, f"Deployment {namespace}/{owner}", what, manager)]


def istiod_restarts(pod: Mapping[str, Any]) -> list[Change]:
    """istiod pod starts and container restarts (with the last exit's reason: OOMKilled, Error)."""
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    name = f"Pod {metadata.get('namespace')}/{metadata.get('name')}"
    found = []
    started = parse_rfc3339_or_none(status.get("startTime"))
    if started:
        found.append(Change(started, ChangeKind.RESTART, name, "started"))
    for container in status.get("containerStatuses") or []:
        running = parse_rfc3339_or_none(((container.get("state") or {}).get("running") or {}).get("startedAt"))
        if not running or not container.get("restartCount"):
            continue
        last = ((container.get("lastState") or {}).get("terminated") or {}).get("reason")
        what = f"container {container.get('name')} restarted ({container['restartCount']} restarts" + (
            f", last exit {last})" if last else ")")
        found.append(Change(running, ChangeKind.RESTART, name, what))
    return found


def certificate_changes(configmap: Mapping[str, Any]) -> list[Change]:
    """notBefore of each root in ``istio-ca-root-cert``: when a new mesh root began (a rotation)."""
    metadata = configmap.get("metadata") or {}
    pem = (configmap.get("data") or {}).get(ROOT_CERT_KEY)
    if not pem:
        return []
    try:
        roots = parse_pem_bundle(pem)
    except CertificateError:
        return []  # the certs check reports an unparsable bundle (MB3013)
    writers = _writes(metadata)
    manager = max(writers)[1] if writers else None
    name = f"ConfigMap {metadata.get('namespace')}/{metadata.get('name')}"
    return [Change(root.not_before, ChangeKind.CERTIFICATE, name,
                   f"mesh root {root.subject} valid from (notBefore)", manager) for root in roots]


def changes_between(changes: Iterable[Change], start: datetime, end: datetime) -> list[Change]:
    return sorted(c for c in changes if start <= c.at <= end)


def _writes(metadata: Mapping[str, Any]) -> list[tuple[datetime, str | None, str]]:
    """(time, manager, operation) of each managedFields entry that wrote the object itself, not its status."""
    found = []
    for entry in metadata.get("managedFields") or []:
        at = parse_rfc3339_or_none(entry.get("time"))
        if at and entry.get("subresource") != "status":
            found.append((at, entry.get("manager"), entry.get("operation") or ""))
    return found


def _by_name(objects: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Objects by (namespace, name)."""
    found: dict[tuple[str, str], Mapping[str, Any]] = {}
    for obj in objects:
        metadata = obj.get("metadata") or {}
        found[(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))] = obj
    return found


def _name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    return f"{obj.get('kind')} {namespace}/{metadata.get('name')}" if namespace else \
        f"{obj.get('kind')} {metadata.get('name')}"


# -- from the cluster ----------------------------------------------------------------------------------------


def read_changes(client: KubeClient, namespaces: Sequence[str], istio_namespace: str
                 ) -> tuple[list[Change], list[Finding]]:
    """Every change the timeline shows, read kind by kind; what cannot be read becomes a finding."""
    scope = sorted({*namespaces, istio_namespace}) if namespaces else [None]
    reader = _Reader(client)
    changes: list[Change] = []
    for kind in MESH_KINDS:
        for namespace in scope:
            changes += [c for obj in reader.list(kind, namespace) for c in config_changes(obj)]
    changes += [c for ns in reader.list("Namespace", None)
                if not namespaces or (ns.get("metadata") or {}).get("name") in scope
                for c in injection_changes(ns)]
    for namespace in scope:
        deployments = _by_name(reader.list("Deployment", namespace))
        changes += [c for rs in reader.list(REPLICA_SETS, namespace) for c in rollout_changes(rs, deployments)]
    changes += [c for pod in reader.list("Pod", istio_namespace, label_selector="app=istiod")
                for c in istiod_restarts(pod)]
    changes += [c for cm in reader.list("ConfigMap", istio_namespace,
                                        field_selector=f"metadata.name={ROOT_CERT_CONFIGMAP}")
                for c in certificate_changes(cm)]
    return sorted(changes), reader.problems


class _Reader:
    """Lists one kind in one namespace; a kind the cluster does not serve is simply absent."""

    def __init__(self, client: KubeClient):
        self.client = client
        self.problems: list[Finding] = []
        self._down = False

    def list(self, kind: str | KindInfo, namespace: str | None, *, field_selector: str | None = None,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        if self._down:
            return []
        try:
            return self.client.list(kind, namespace, field_selector=field_selector, label_selector=label_selector)
        except NotFound:
            return []
        except (ClusterError, TransientError) as exc:
            self.problems.append(unreadable("list", kind, namespace, exc))
            # An unreachable API server answers every further list the same way, after the same timeout.
            self._down = isinstance(exc, TransientError) and not exc.status
            return []


def changes_from_objects(objects: Iterable[Mapping[str, Any]], namespaces: Sequence[str],
                         istio_namespace: str) -> list[Change]:
    """The same changes ``read_changes`` finds, from objects already in hand (captured files, the demo)."""
    objects = list(objects)
    scope = {*namespaces, istio_namespace}

    def in_scope(obj: Mapping[str, Any]) -> bool:
        return not namespaces or (obj.get("metadata") or {}).get("namespace") in scope

    deployments = _by_name(o for o in objects if o.get("kind") == "Deployment")
    found: list[Change] = []
    for obj in objects:
        kind, metadata = obj.get("kind"), obj.get("metadata") or {}
        if kind in MESH_KINDS and in_scope(obj):
            found += config_changes(obj)
        elif kind == "Namespace" and (not namespaces or metadata.get("name") in scope):
            found += injection_changes(obj)
        elif kind == "ReplicaSet" and in_scope(obj):
            found += rollout_changes(obj, deployments)
        elif kind == "Pod" and metadata.get("namespace") == istio_namespace and \
                (metadata.get("labels") or {}).get("app") == "istiod":
            found += istiod_restarts(obj)
        elif kind == "ConfigMap" and metadata.get("namespace") == istio_namespace and \
                metadata.get("name") == ROOT_CERT_CONFIGMAP:
            found += certificate_changes(obj)
    return sorted(found)
