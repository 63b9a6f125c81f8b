"""Istio host names: FQDN conversion, wildcard matching, and an index of the hosts the mesh knows.

The index answers "does host X exist for a client in namespace N?" with a
dictionary lookup for exact hosts and one lookup per DNS label for wildcard
ServiceEntry hosts, so checking every VirtualService and DestinationRule
costs about the number of references, not references times services.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from commands.cluster.snapshot import Resource, Snapshot

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
EXPORT_TO_ALL = "*"
EXPORT_TO_OWN_NAMESPACE = "."
SERVICE_EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"


def is_wildcard(host: str) -> bool:
    return host.startswith("*")


def to_fqdn(host: str, namespace: str, domain: str = DEFAULT_CLUSTER_DOMAIN) -> str:
    """``reviews`` in ``default`` -> ``reviews.default.svc.cluster.local``; dotted and wildcard hosts stay as is."""
    if is_wildcard(host) or "." in host:
        return host
    return f"{host}.{namespace}.svc.{domain}"


def host_matches(a: str, b: str) -> bool:
    """True when two hosts overlap: equal, or one wildcard (``*.example.com``, ``*``) covers the other."""
    if is_wildcard(a) and is_wildcard(b):
        shorter, longer = sorted((a[1:], b[1:]), key=len)
        return longer.endswith(shorter)
    if is_wildcard(a):
        return b.endswith(a[1:])
    if is_wildcard(b):
        return a.endswith(b[1:])
    return a == b


def wildcard_suffixes(host: str) -> Iterator[str]:
    """The suffixes a wildcard must have to cover ``host``: ``a.b.c`` -> ``.b.c``, ``.c``, ``""``."""
    name = host[1:] if is_wildcard(host) else host
    dot = name.find(".")  # from dot to dot, not char by char: this runs for every Service and reference
    while dot != -1:
        yield name[dot:]
        dot = name.find(".", dot + 1)
    yield ""


def split_namespaced_host(host: str) -> tuple[str | None, str]:
    """``ns/example.com`` -> (``ns``, ``example.com``); a plain host has no namespace part."""
    if "/" not in host:
        return None, host
    namespace, _, name = host.partition("/")
    return namespace, name


def visible_namespaces(export_to: Iterable[str], own_namespace: str) -> frozenset[str] | None:
    """Namespaces an object is exported to; ``None`` means every namespace (no exportTo, or ``*``)."""
    targets = [str(t) for t in export_to]
    if not targets or EXPORT_TO_ALL in targets:
        return None
    return frozenset(own_namespace if t == EXPORT_TO_OWN_NAMESPACE else t for t in targets)


@dataclass(frozen=True)
class HostEntry:
    """One host a Service or ServiceEntry puts in the mesh registry."""

    host: str
    resource: Resource
    ports: tuple[int, ...]
    visible_to: frozenset[str] | None
    """``None`` when exported to every namespace."""

    @property
    def kind(self) -> str:
        return self.resource.kind

    def visible_from(self, namespaces: Iterable[str]) -> bool:
        return self.visible_to is None or any(ns in self.visible_to for ns in namespaces)


@dataclass(frozen=True)
class HostLookup:
    """What the registry knows about one referenced host."""

    entries: tuple[HostEntry, ...] = ()
    covered_by_wildcard_reference: bool = False
    """The reference itself is a wildcard that covers known hosts; there is no single entry to read ports from."""

    @property
    def found(self) -> bool:
        return bool(self.entries) or self.covered_by_wildcard_reference

    @property
    def port_sets(self) -> list[tuple[int, ...]]:
        return [e.ports for e in self.entries]


@dataclass
class HostIndex:
    """Services (by FQDN) and ServiceEntry hosts (exact, and wildcards by suffix), built once per snapshot."""

    domain: str = DEFAULT_CLUSTER_DOMAIN
    exact: dict[str, list[HostEntry]] = field(default_factory=lambda: defaultdict(list))
    wildcards: dict[str, list[HostEntry]] = field(default_factory=lambda: defaultdict(list))
    """``*.example.com`` is stored under ``.example.com``; ``*`` under ``""``."""
    known_suffixes: set[str] = field(default_factory=set)
    """Every dot-suffix of every known host, to answer "does wildcard X cover anything?"."""

    @classmethod
    def of(cls, snapshot: Snapshot) -> HostIndex:
        """One index per snapshot, built on first use and shared by every analyzer."""
        cached = getattr(snapshot, "_host_index", None)
        if cached is None:
            cached = cls.build(snapshot.of_kind("Service"), snapshot.of_kind("ServiceEntry"))
            snapshot._host_index = cached  # type: ignore[attr-defined]
        return cached

    @classmethod
    def build(cls, services: Iterable[Resource], service_entries: Iterable[Resource],
              domain: str = DEFAULT_CLUSTER_DOMAIN) -> HostIndex:
        index = cls(domain=domain)
        for service in services:
            index._add_service(service)
        for entry in service_entries:
            index._add_service_entry(entry)
        return index

    def _add_service(self, service: Resource) -> None:
        namespace = service.namespace or "default"
        annotation = str(service.annotations.get(SERVICE_EXPORT_TO_ANNOTATION) or "")
        export_to = [part.strip() for part in annotation.split(",") if part.strip()]
        ports = tuple(_port_numbers(service.spec.get("ports"), "port"))
        self._add(HostEntry(to_fqdn(service.name, namespace, self.domain), service, ports,
                            visible_namespaces(export_to, namespace)))

    def _add_service_entry(self, entry: Resource) -> None:
        namespace = entry.namespace or "default"
        ports = tuple(_port_numbers(entry.spec.get("ports"), "number"))
        # Unlike istioctl (which scopes a ServiceEntry exported to other namespaces to its own
        # namespace only), honour every exportTo target so cross-namespace references are not flagged.
        visible_to = visible_namespaces(entry.spec.get("exportTo") or (), namespace)
        for host in entry.spec.get("hosts") or ():
            self._add(HostEntry(to_fqdn(str(host), namespace, self.domain), entry, ports, visible_to))

    def _add(self, entry: HostEntry) -> None:
        if is_wildcard(entry.host):
            self.wildcards[entry.host[1:]].append(entry)
        else:
            self.exact[entry.host].append(entry)
        self.known_suffixes.update(wildcard_suffixes(entry.host))

    def lookup(self, host: str, namespace: str, export_to: Sequence[str] = ()) -> HostLookup:
        """Entries for ``host`` as the clients of a referencing object in ``namespace`` see them.

        Short names resolve in ``namespace``.  As in istio/istio pkg/config/analysis/analyzers/util/
        service_lookup.go (GetDestinationHost), the clients are the namespaces the referencing object
        is exported to, or its own namespace without exportTo; a host counts when any of them sees it.
        An object exported to ``*`` needs a host exported everywhere.  Wildcard ServiceEntry hosts
        are matched from the object's own namespace, as Istio does.
        """
        fqdn = to_fqdn(host, namespace, self.domain)
        exact = tuple(e for e in self.exact.get(fqdn, ()) if _visible(e, namespace, export_to))
        if exact:
            return HostLookup(exact)
        covering = tuple(e for suffix in _distinct(wildcard_suffixes(fqdn), wildcard_suffixes(host))
                         for e in self.wildcards.get(suffix, ()) if e.visible_from((namespace,)))
        if covering:
            return HostLookup(covering)
        # A wildcard reference (a DestinationRule for ``*.local``, say) exists when it covers any known host.
        if is_wildcard(host) and host[1:] in self.known_suffixes:
            return HostLookup(covered_by_wildcard_reference=True)
        return HostLookup()

    def exists(self, host: str, namespace: str, export_to: Sequence[str] = ()) -> bool:
        return self.lookup(host, namespace, export_to).found


def _visible(entry: HostEntry, namespace: str, export_to: Sequence[str]) -> bool:
    targets = [str(t) for t in export_to]
    if not targets:
        return entry.visible_from((namespace,))
    if entry.visible_to is None:
        return True
    return entry.visible_from(namespace if t == EXPORT_TO_OWN_NAMESPACE else t for t in targets)


def _port_numbers(ports: Any, key: str) -> Iterator[int]:
    for port in ports or ():
        if isinstance(port, Mapping) and isinstance(port.get(key), int):
            yield port[key]


def _distinct(*iterables: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(item for iterable in iterables for item in iterable))
