"""Which sidecar injector a namespace's labels select: the one rule the analyzers and the action planner share.

Istio's injection webhooks (manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml)
select namespaces by label:
- the default revision's ``namespace.sidecar-injector.istio.io`` matches ``istio-injection: enabled``;
- a revision's ``rev.namespace.sidecar-injector.istio.io`` matches ``istio.io/rev In [<rev>]`` **and**
  ``istio-injection DoesNotExist``.
So ``istio-injection`` has priority over ``istio.io/rev``: ``enabled`` means the default revision injects
whatever ``istio.io/rev`` says, and any other value (``disabled``, even empty) means no webhook matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

INJECTION_LABEL = "istio-injection"
REVISION_LABEL = "istio.io/rev"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
DEFAULT_REVISION = "default"


@dataclass(frozen=True)
class NamespaceInjection:
    """What a namespace's labels say about sidecar injection."""

    injection: str | None
    """The ``istio-injection`` label, None when absent."""
    revision: str | None
    """The ``istio.io/rev`` label, None when absent."""
    ambient: bool

    @classmethod
    def of_labels(cls, labels: Mapping[str, Any]) -> NamespaceInjection:
        return cls(injection=_label(labels, INJECTION_LABEL), revision=_label(labels, REVISION_LABEL),
                   ambient=labels.get(DATAPLANE_MODE_LABEL) == "ambient")

    @property
    def unlabelled(self) -> bool:
        """Neither injection label (an empty ``istio-injection`` counts as absent, as in istioctl)."""
        return not self.injection and self.revision is None

    @property
    def injector_revision(self) -> str | None:
        """The revision whose webhook injects sidecars here, None when nothing does (see the module's rule)."""
        if self.ambient:
            return None
        if self.injection == "enabled":
            return DEFAULT_REVISION
        if self.injection is not None:
            return None  # "disabled" or any other value: the revision webhooks require the label to be absent
        if self.revision is not None:
            return self.revision or DEFAULT_REVISION
        return None

    @property
    def injected(self) -> bool:
        """New pods here get a sidecar (unless they opt out themselves)."""
        return self.injector_revision is not None

    @property
    def enrolled(self) -> bool:
        """The namespace's workloads are in the mesh: injected with a sidecar, or captured by ztunnel (ambient)."""
        return self.injected or self.ambient

    def conflicting_labels(self) -> list[str]:
        """The injection labels when there is more than one kind, in istioctl's order."""
        found = [] if self.injection is None else [f"{INJECTION_LABEL}={self.injection}"]
        if self.injection is None or self.injection == "enabled":
            if self.revision is not None:
                found.append(f"{REVISION_LABEL}={self.revision}")
            # Only ambient mode competes with sidecar injection; dataplane-mode=none is an opt-out.
            if self.ambient:
                found.append(f"{DATAPLANE_MODE_LABEL}=ambient")
        return found if len(found) > 1 else []


def _label(labels: Mapping[str, Any], key: str) -> str | None:
    return None if labels.get(key) is None else str(labels[key])
