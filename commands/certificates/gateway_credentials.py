"""Which TLS Secrets Gateways depend on, and where Istio looks for them.

Istio loads a ``credentialName`` Secret from the namespace of the gateway
*workload* (the pods the Gateway's selector picks), not of the Gateway object,
so the lookup follows the selector.
"""

from __future__ import annotations

from dataclasses import dataclass

from commands.cluster.selectors import PodIndex
from commands.cluster.snapshot import Resource, Snapshot
from commands.shapes import mappings

CA_SUFFIX = "-cacert"
TLS_MODES_WITH_CREDENTIALS = {"SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"}


@dataclass(frozen=True)
class CredentialRef:
    gateway: Resource
    credential_name: str
    secret_namespace: str
    port: int | None
    mode: str
    hosts: tuple[str, ...]

    @property
    def secret_key(self) -> tuple[str, str]:
        return (self.secret_namespace, self.credential_name)


def gateway_workload_namespaces(gateway: Resource, pods: PodIndex) -> list[str]:
    """Namespaces of the pods the Gateway selects; the Gateway's own namespace when none match."""
    selector = gateway.spec.get("selector") or {}
    namespaces = sorted({p.namespace for p in pods.select(selector) if p.namespace}) if selector else []
    return namespaces or [gateway.namespace or "default"]


def credential_refs(snapshot: Snapshot) -> list[CredentialRef]:
    """Every (Gateway server, credentialName, Secret namespace) in the snapshot."""
    pods = PodIndex.of(snapshot)
    refs: list[CredentialRef] = []
    for gateway in snapshot.of_kind("Gateway"):
        namespaces = None
        for server in mappings(gateway.spec.get("servers")):
            tls = server.get("tls")
            if not isinstance(tls, dict):
                tls = {}
            name = tls.get("credentialName")
            mode = str(tls.get("mode") or "SIMPLE")
            if not name or mode not in TLS_MODES_WITH_CREDENTIALS:
                continue
            if namespaces is None:
                namespaces = gateway_workload_namespaces(gateway, pods)
            port = server["port"].get("number") if isinstance(server.get("port"), dict) else None
            for namespace in namespaces:
                refs.append(CredentialRef(gateway=gateway, credential_name=str(name), secret_namespace=namespace,
                                          port=port, mode=mode, hosts=tuple(server.get("hosts") or ())))
    return refs



def secret_names_needed(snapshot: Snapshot) -> set[tuple[str, str]]:
    """(namespace, name) of every Secret the Gateways reference, including ``<name>-cacert`` for MUTUAL."""
    needed: set[tuple[str, str]] = set()
    for ref in credential_refs(snapshot):
        needed.add(ref.secret_key)
        if ref.mode in {"MUTUAL", "OPTIONAL_MUTUAL"}:
            needed.add((ref.secret_namespace, ref.credential_name + CA_SUFFIX))
    return needed
