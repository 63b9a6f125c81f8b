"""How a pod is named across meshbot: the port-forwarder, the checks and the Slack replies all pass ``PodRef``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class NamedObject(Protocol):
    """Anything with a Kubernetes name and namespace (``commands.cluster.snapshot.Resource`` in practice)."""

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str | None: ...


@dataclass(frozen=True, order=True)
class PodRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def of(cls, pod: NamedObject) -> PodRef:
        return cls(pod.namespace or "default", pod.name)
