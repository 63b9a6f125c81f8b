"""Snapshot: the read-only set of cluster objects a check looks at.

Both sources (live cluster, YAML files) produce the same thing, so every check
and analyzer works identically online and offline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from commands.findings import Finding
from commands.resources.kinds import is_namespaced

DEFAULT_ISTIO_NAMESPACE = "istio-system"


_T = TypeVar("_T")


class _Cached(Generic[_T]):
    """A property computed once per instance and then read from its ``__dict__`` (even on a frozen dataclass).

    functools.cached_property does the same but takes a lock on every first read (Python 3.11), which cost more than
    the property itself on 100,000 pods.
    """

    def __init__(self, compute: Callable[[Any], _T]):
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __get__(self, instance: Any, owner: type | None = None) -> _T:
        if instance is None:
            return self  # type: ignore[return-value]
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    name: str
    namespace: str | None
    body: Mapping[str, Any]
    source: str | None = None
    """``file:line`` for objects read from files."""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any], *, source: str | None = None,
                    default_namespace: str = "default") -> Resource:
        """Wrap a decoded Kubernetes object; namespaced kinds without one get ``default_namespace``."""
        meta = obj.get("metadata") or {}
        kind = obj.get("kind", "")
        namespace = meta.get("namespace") or (default_namespace if is_namespaced(kind) else None)
        return cls(api_version=obj.get("apiVersion", ""), kind=kind, name=meta.get("name", ""),
                   namespace=namespace, body=obj, source=source)

    # Cached: analyzers read these hundreds of thousands of times on a large mesh, and a Resource's body is never
    # changed once wrapped.
    @_Cached
    def metadata(self) -> Mapping[str, Any]:
        return self.body.get("metadata") or {}

    @_Cached
    def labels(self) -> Mapping[str, str]:
        return self.metadata.get("labels") or {}

    @_Cached
    def annotations(self) -> Mapping[str, str]:
        return self.metadata.get("annotations") or {}

    @_Cached
    def spec(self) -> Mapping[str, Any]:
        return self.body.get("spec") or {}

    @_Cached
    def status(self) -> Mapping[str, Any]:
        return self.body.get("status") or {}

    @property
    def qualified_name(self) -> str:
        """``namespace/name``, or ``name`` when cluster-scoped."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def origin(self) -> str:
        """``Kind namespace/name`` (``Kind name`` when cluster-scoped), as istioctl prints it."""
        return f"{self.kind} {self.qualified_name}"

    @_Cached
    def key(self) -> tuple[str, str | None, str]:
        return (self.kind, self.namespace, self.name)


@dataclass
class Snapshot:
    """Objects by kind, plus what could not be read and why."""

    resources: Iterable[Resource] = ()
    istio_namespace: str = DEFAULT_ISTIO_NAMESPACE
    read_problems: list[Finding] = field(default_factory=list)
    """Findings from the source: 403s, timeouts, missing APIs."""
    unreadable_kinds: set[str] = field(default_factory=set)
    """Kinds that could not be read, so their absence proves nothing."""
    mesh_config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_kind: dict[str, list[Resource]] = defaultdict(list)
        self._by_key: dict[tuple[str, str | None, str], Resource] = {}
        for resource in self.resources:
            self.add(resource)
        self.resources = ()

    def add(self, resource: Resource) -> None:
        """Add or replace (same kind/namespace/name: the later object wins, like ``kubectl apply``)."""
        # The key is spelled out rather than read through the cached ``Resource.key``: a snapshot of 145,000 objects
        # is built in every one-shot run, and the descriptor's first read costs more than the tuple.
        key = (resource.kind, resource.namespace, resource.name)
        previous = self._by_key.get(key)
        if previous is not None:
            self._by_kind[resource.kind].remove(previous)
        self._by_key[key] = resource
        self._by_kind[resource.kind].append(resource)

    def of_kind(self, kind: str, namespace: str | None = None) -> list[Resource]:
        items = self._by_kind.get(kind, [])
        if namespace is None:
            return list(items)
        return [r for r in items if r.namespace == namespace]

    def get(self, kind: str, namespace: str | None, name: str) -> Resource | None:
        return self._by_key.get((kind, namespace, name))

    def kinds(self) -> set[str]:
        return {k for k, v in self._by_kind.items() if v}

    def can_trust_absence(self, kind: str) -> bool:
        """False when ``kind`` could not be read: a missing object is then unknown, not absent."""
        return kind not in self.unreadable_kinds

    def __iter__(self) -> Iterator[Resource]:
        for items in self._by_kind.values():
            yield from items

    def __len__(self) -> int:
        return len(self._by_key)

    def namespaces(self) -> list[str]:
        """Every namespace that exists or holds an object."""
        names = {r.name for r in self.of_kind("Namespace")}
        names.update(r.namespace for r in self if r.namespace)
        return sorted(names)


class SnapshotSource(Protocol):
    """Where a snapshot comes from: a live cluster or files."""

    def snapshot(self, kinds: Iterable[str]) -> Snapshot: ...
