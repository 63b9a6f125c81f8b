"""Snapshot from a live cluster — the online twin of ``sources/files.py``.

One paged LIST per kind, cluster-wide for a whole-mesh diagnosis.  A diagnosis of
one namespace lists the pod-sized kinds (Pods, PodMetrics, Events, Deployments)
only in that namespace and the Istio root namespace, plus the pods its Gateways
select; mesh-wide configuration (Services, Istio's kinds, Namespaces, webhooks)
stays cluster-wide because routes, policies and exportTo cross namespaces.
ConfigMaps (only the mesh's public ones) and Secrets (never listed; fetched by
name, stripped of keys on arrival) are read differently.  Every object is
trimmed to what the checks read as its page arrives (``trimmed``).  What cannot
be read becomes a finding in ``Snapshot.read_problems`` instead of an exception.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import yaml

from commands import codes
from commands.certificates.gateway_credentials import secret_names_needed
from commands.certificates.secrets import public_secret
from commands.clients.kube import ApiCall, Keep, KubeClient, Listing, failure_reason
from commands.cluster.endpoints import PortForwarder
from commands.cluster.snapshot import DEFAULT_ISTIO_NAMESPACE, Resource, Snapshot
from commands.errors import AccessDenied, ClusterError, MeshbotError, NotFound, TransientError, UserError
from commands.resources.kinds import KINDS, kind_info

log = logging.getLogger(__name__)

ROOT_CERT_CONFIGMAP = "istio-ca-root-cert"
MESH_CONFIGMAP = "istio"
CA_SECRETS = ("istio-ca-secret", "cacerts")
"""They hold the mesh CA's private key: read only when opted in (SECURITY.md)."""

# Secret names come from Gateways and the pods they select, so those are read first.
SECRET_DEPENDENCIES = frozenset({"Gateway", "Pod"})
NOT_SERVED_HINTS = {"PodMetrics": "metrics-server is not installed"}

NAMESPACE_SCOPED_READS = frozenset({"Pod", "PodMetrics", "Event", "Deployment"})
"""Kinds a namespace diagnosis lists only in its namespace and the Istio root namespace (istiod, its webhook
Service's pods, the root namespace's gateways).  Checks report on pods, their metrics, Events and Deployments only
in scope (``CheckContext.in_scope``); the rest they read is mesh-wide configuration, listed cluster-wide."""

DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
"""A copy of the whole object kubectl apply leaves behind; no check reads it."""
DROPPED_POD_SPEC = ("volumes", "tolerations", "affinity", "topologySpreadConstraints")
DROPPED_CONTAINER_FIELDS = ("env", "envFrom", "volumeMounts", "livenessProbe", "readinessProbe", "startupProbe")
"""The bulk of an injected pod's spec (istio-proxy's ~20 env values, the istio-envoy/istio-token/istiod-ca-cert
volumes and their mounts, the probes); no check reads them (tests/test_kube_trim.py runs every check on trimmed
and untrimmed pods and compares the findings)."""

_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?$")


class ListReads(Protocol):
    """What KubeSource lists through: the client itself, or the bot's shared, coalescing view of it."""

    def read_list(self, kind: Any, namespace: str | None = None, *, field_selector: str | None = None,
                  label_selector: str | None = None, keep: Keep | None = None) -> Listing: ...


class KubeSource:
    """Reads the kinds the checks ask for from the API server into a Snapshot."""

    def __init__(self, client: KubeClient, istio_namespace: str = DEFAULT_ISTIO_NAMESPACE,
                 read_ca_secrets: bool = False, extra_secrets: Iterable[tuple[str, str]] = (), *,
                 namespace: str | None = None, reads: ListReads | None = None):
        self.client = client
        self.namespace = namespace
        """The diagnosis's scope: pod-sized kinds are listed only here and in the Istio namespace."""
        self.reads: ListReads = reads or client
        self.istio_namespace = istio_namespace
        self.read_ca_secrets = read_ca_secrets
        self.extra_secrets = frozenset(extra_secrets)
        """(namespace, name) of further Secrets to fetch, e.g. from settings."""
        self.in_cluster = client.is_in_cluster
        self.port_forwarder: PortForwarder | None = None
        """Set by ``live_source``: how checks reach Envoy/istiod from outside the cluster."""
        self._api_down = False
        self._timeouts_in_a_row = 0
        self._readers: dict[str, Callable[[Snapshot], None]] = {
            "ConfigMap": self._read_configmaps,
            "Secret": self._read_secrets,
            "Event": self._read_events,
        }

    def snapshot(self, kinds: Iterable[str]) -> Snapshot:
        wanted = set(kinds)
        unknown = wanted - KINDS.keys()
        if unknown:
            raise UserError(f"cannot read unknown kinds from the cluster: {', '.join(sorted(unknown))}")
        if "Secret" in wanted:
            wanted |= SECRET_DEPENDENCIES
        snapshot = Snapshot(istio_namespace=self.istio_namespace)
        self._api_down, self._timeouts_in_a_row = False, 0
        for kind in _reading_order(wanted, gateways_first=bool(self.namespace)):
            reader = self._readers.get(kind)
            if reader:
                reader(snapshot)
            elif self.namespace and kind in NAMESPACE_SCOPED_READS:
                self._read_in_scope(snapshot, kind)
            else:
                self._list_into(snapshot, kind)
        return snapshot

    def scope_namespaces(self) -> list[str]:
        """Where a namespace diagnosis lists pod-sized kinds; empty for a whole-mesh one (cluster-wide)."""
        return sorted({self.namespace, self.istio_namespace}) if self.namespace else []

    def _read_in_scope(self, snapshot: Snapshot, kind: str, field_selector: str | None = None) -> None:
        for namespace in self.scope_namespaces():
            self._list_into(snapshot, kind, namespace=namespace, field_selector=field_selector)
        if kind == "Pod":
            self._read_gateway_pods(snapshot)

    def _read_gateway_pods(self, snapshot: Snapshot) -> None:
        """The pods each Gateway selects, wherever they run: a Gateway's selector matches pods in every namespace
        unless istiod runs with PILOT_SCOPE_GATEWAY_TO_NAMESPACE (istio.io reference networking/v1 Gateway,
        "selector"), and the gateway, certs and analyze checks follow a Gateway to its pods."""
        for selector in sorted({_label_selector(g.spec.get("selector")) for g in snapshot.of_kind("Gateway")} - {""}):
            self._list_into(snapshot, "Pod", label_selector=selector)

    # -- readers ------------------------------------------------------------------

    def _list_into(self, snapshot: Snapshot, kind: str, namespace: str | None = None,
                   field_selector: str | None = None, label_selector: str | None = None) -> None:
        info = kind_info(kind)
        call = ApiCall("list", info, namespace)
        if self._api_down:
            # One unreachable API server is one finding, not a 10 s timeout per kind.
            snapshot.unreadable_kinds.add(kind)
            return
        try:
            items = self.reads.read_list(info, namespace, field_selector=field_selector,
                                         label_selector=label_selector, keep=trimmed).items
        except NotFound:
            # The CRD (or metrics-server) is not installed: the objects really do not exist.
            hint = NOT_SERVED_HINTS.get(kind)
            snapshot.read_problems.append(codes.finding(
                "MB0003", origin=call.path, resource=info.resource, api=info.api_version,
                evidence={"hint": hint} if hint else None))
            return
        except (ClusterError, TransientError) as exc:
            _record_unreadable(snapshot, call, exc)
            self._note_transport_failure(exc)
            return
        self._timeouts_in_a_row = 0
        for item in items:
            snapshot.add(Resource.from_object(item))

    def _note_transport_failure(self, error: MeshbotError) -> None:
        """Give up on the remaining kinds once the API server is clearly unreachable.

        A refused connection settles it at once; one slow kind may be a slow
        webhook, but two timeouts in a row mean every further list would wait
        the full timeout too.
        """
        if not isinstance(error, TransientError) or error.status:
            return
        self._timeouts_in_a_row += 1
        if error.reason.startswith("connection") or self._timeouts_in_a_row >= 2:
            self._api_down = True

    def _read_configmaps(self, snapshot: Snapshot) -> None:
        """The public root cert in every namespace, and the Istio namespace's own (mesh config, injector)."""
        self._list_into(snapshot, "ConfigMap", field_selector=f"metadata.name={ROOT_CERT_CONFIGMAP}")
        self._list_into(snapshot, "ConfigMap", namespace=self.istio_namespace)
        snapshot.mesh_config = self._mesh_config(snapshot)

    def _read_events(self, snapshot: Snapshot) -> None:
        """Warning Events only: Normal ones (Scheduled, Pulled, Started) are most of a busy cluster's Events and
        explain no outage (the core/v1 events field selector supports ``type``: pkg/registry/core/event/strategy.go
        ToSelectableFields)."""
        if self.namespace:
            self._read_in_scope(snapshot, "Event", field_selector="type=Warning")
        else:
            self._list_into(snapshot, "Event", field_selector="type=Warning")

    def _mesh_config(self, snapshot: Snapshot) -> dict[str, Any]:
        configmap = snapshot.get("ConfigMap", self.istio_namespace, MESH_CONFIGMAP)
        text = (configmap.body.get("data") or {}).get("mesh") if configmap else None
        if not text:
            return {}
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            log.warning("ConfigMap %s/%s: mesh config is not valid YAML: %s",
                        self.istio_namespace, MESH_CONFIGMAP, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def _read_secrets(self, snapshot: Snapshot) -> None:
        """GET by name only; a 404 just means the Secret is absent."""
        for namespace, name in sorted(self._secret_names(snapshot)):
            call = ApiCall("get", kind_info("Secret"), namespace, name)
            try:
                secret = self.client.get("Secret", namespace, name)
            except NotFound:
                continue
            except UserError as exc:  # e.g. a credentialName that is no Secret name at all
                log.info("not fetching Secret %s/%s: %s", namespace, name, exc)
                continue
            except (ClusterError, TransientError) as exc:
                _record_unreadable(snapshot, call, exc)
                continue
            snapshot.add(Resource.from_object(public_secret(secret)))

    def _secret_names(self, snapshot: Snapshot) -> set[tuple[str, str]]:
        names = secret_names_needed(snapshot) | self.extra_secrets
        ca_secrets = {(self.istio_namespace, name) for name in CA_SECRETS}
        if self.read_ca_secrets:
            return names | ca_secrets
        # The CA's Secrets hold its private key (SECURITY.md): without the opt-in they are never fetched, even
        # when a Gateway's credentialName or MESHBOT_EXTRA_SECRETS names them; RBAC is the second fence.
        return names - ca_secrets


def _reading_order(kinds: set[str], *, gateways_first: bool = False) -> list[str]:
    """Listed kinds in catalogue order, then ConfigMaps, then Secrets (they depend on Gateways and Pods);
    ``gateways_first`` for a namespace diagnosis, which reads the pods the Gateways select."""
    last = {"Gateway": -1 if gateways_first else 0, "ConfigMap": 1, "Secret": 2}
    catalogue = list(KINDS)
    return sorted(kinds, key=lambda k: (last.get(k, 0), catalogue.index(k)))


def _record_unreadable(snapshot: Snapshot, call: ApiCall, error: MeshbotError) -> None:
    """A 401/403 names the missing permission (MB0001); timeouts, refusals and 5xx are MB0002."""
    code = "MB0001" if isinstance(error, AccessDenied) else "MB0002"
    evidence = {"status": error.status} if isinstance(error, ClusterError) and error.status else {}
    snapshot.read_problems.append(codes.finding(
        code, origin=call.path, evidence=evidence, verb=call.verb, resource=call.resource,
        scope=call.scope, reason=failure_reason(error)))
    snapshot.unreadable_kinds.add(call.kind.kind)


def trimmed(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what no check reads, so ten thousand pods fit in the memory of a few hundred.

    managedFields is often the largest part of an object (the timeline reads it through its own narrow lists).
    """
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            for name in DROPPED_ANNOTATIONS:
                annotations.pop(name, None)
    if obj.get("kind") == "Pod" and isinstance(obj.get("spec"), dict):
        _trim_pod_spec(obj["spec"])
    return obj


def _trim_pod_spec(spec: dict[str, Any]) -> None:
    for name in DROPPED_POD_SPEC:
        spec.pop(name, None)
    for section in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(section) or ():
            if isinstance(container, dict):
                for name in DROPPED_CONTAINER_FIELDS:
                    container.pop(name, None)


def _label_selector(selector: Any) -> str:
    """``k=v,k2=v2`` for a Gateway's selector map; empty when absent or not valid label syntax."""
    if not isinstance(selector, dict) or not selector:
        return ""
    terms = [(str(k), str(v)) for k, v in sorted(selector.items())]
    if not all(_LABEL.match(k) and _LABEL_VALUE.match(v) for k, v in terms):
        return ""
    return ",".join(f"{k}={v}" for k, v in terms)


def live_source(*, kubeconfig: str | None = None, context: str | None = None, timeout: float = 10.0,
                istio_namespace: str = DEFAULT_ISTIO_NAMESPACE, read_ca_secrets: bool = False,
                extra_secrets: Iterable[tuple[str, str]] = (), in_cluster: bool | None = None,
                namespace: str | None = None) -> KubeSource:
    """A KubeSource for the configured cluster, with the port-forwarder its checks need for Envoy/istiod.

    ``in_cluster`` (meshbot runs as a pod) means istiod's pod IPs are reachable directly; Envoy admin is
    bound to 127.0.0.1 in every sidecar, so it is always reached through a port-forward.
    """
    from commands.clients.kube import KubePortForwarder

    client = KubeClient.connect(kubeconfig, context, timeout=timeout)
    source = KubeSource(client, istio_namespace=istio_namespace, read_ca_secrets=read_ca_secrets,
                        extra_secrets=extra_secrets, namespace=namespace)
    if in_cluster is not None:
        source.in_cluster = in_cluster
    source.port_forwarder = KubePortForwarder(client)
    return source
