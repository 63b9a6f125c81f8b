"""Istio versions of istiod and its proxies, and the control plane/data plane skew Istio supports."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from commands.cluster.endpoints import Endpoint
from commands.cluster.pods import ISTIOD_CONTAINER, container_spec, image_tag, is_istiod
from commands.cluster.snapshot import Resource, Snapshot
from commands.errors import MeshbotError

# Istio 1.23 added the per-type ``resources`` map with ``lastError`` (istio/istio#51638, release note
# istioctl-ps-improvements.yaml): unsubscribed types became IGNORED and rejected config became ERROR.
RESOURCES_MAP_SINCE = (1, 23)

VERSION_PATH = "/version"
"""istiod's monitoring port answers its build as text, ``1.24.2-<git sha>-Clean`` (pilot/pkg/bootstrap/monitoring.go);
``istioctl version`` reads the same path (pkg/kube/client.go, setServerInfoWithIstiodVersionInfo)."""

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, order=True)
class IstioVersion:
    major: int
    minor: int
    patch: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> IstioVersion | None:
        """``1.22.3``, ``1.22.3-distroless``, ``1.25-alpha.<sha>``; None for anything else."""
        match = _VERSION.match((text or "").strip())
        if not match:
            return None
        major, minor, patch = match.groups()
        return cls(int(major), int(minor), int(patch) if patch is not None else None)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}" + (f".{self.patch}" if self.patch is not None else "")


def parse_istiod_build(text: str) -> IstioVersion | None:
    """istiod's ``/version`` answer (``1.24.2-<sha>-Clean``) -> its release.

    The release is what precedes the git revision and build status, as istioctl's
    setServerInfoWithIstiodVersionInfo (pkg/kube/client.go) splits it; its leading digits are the version.
    """
    return IstioVersion.parse(text)


class Skew(StrEnum):
    SAME_MINOR = "same minor"
    """Patch releases of one minor talk to each other (a canary or a rolling patch upgrade is fine)."""
    ONE_MINOR_BEHIND = "one minor behind"
    UNSUPPORTED = "unsupported"


def version_skew(proxy: IstioVersion, istiod: IstioVersion) -> Skew:
    """Istio's supported skew: "The Istio control plane can be one version ahead of the data plane. However,
    the data plane cannot be ahead of control plane" (https://istio.io/latest/docs/releases/supported-releases/
    #control-planedata-plane-skew); ztunnel 1.x works with istiod 1.x and 1.x+1
    (https://istio.io/latest/docs/ambient/upgrade/helm/#ztunnel-daemonset)."""
    if proxy.major != istiod.major:
        return Skew.UNSUPPORTED
    behind = istiod.minor - proxy.minor
    if behind == 0:
        return Skew.SAME_MINOR
    if behind == 1:
        return Skew.ONE_MINOR_BEHIND
    return Skew.UNSUPPORTED


@dataclass(frozen=True)
class Istiod:
    """One istiod instance and the version its proxies are judged against."""

    name: str
    version: IstioVersion | None = None
    version_source: str | None = None
    """``/version``, or the image tag it fell back to."""
    version_problem: str | None = None
    pod: Resource | None = None
    """The istiod pod, when it was found in the cluster (not given as a URL or a capture directory)."""

    @property
    def serves_resources_map(self) -> bool:
        return self.version is not None and (self.version.major, self.version.minor) >= RESOURCES_MAP_SINCE




def control_plane_version(snapshot: Snapshot) -> str | None:
    """istiod's version from its image tag; None when pods disagree or none are known."""
    tags = {image_tag((container_spec(p, ISTIOD_CONTAINER) or {}).get("image"))
            for p in snapshot.of_kind("Pod", snapshot.istio_namespace) if is_istiod(p)}
    tags.discard(None)
    return tags.pop() if len(tags) == 1 else None


def istiod_version(endpoint: Endpoint, target: str | Resource,
                   snapshot: Snapshot) -> tuple[IstioVersion | None, str, str | None]:
    """(version, where it came from, why it is unknown): ``/version`` first, then the pod's image tag."""
    problem = None
    try:
        version = parse_istiod_build(endpoint.get_text(VERSION_PATH))
        if version is not None:
            return version, VERSION_PATH, None
        problem = f"{VERSION_PATH} answered no version"
    except MeshbotError as exc:
        problem = f"{VERSION_PATH}: {exc}"
    if isinstance(target, Resource):
        tag = image_tag((container_spec(target, ISTIOD_CONTAINER) or {}).get("image"))
        source = f"image tag of {target.qualified_name}"
    else:
        # A URL names no pod; the image tag only helps when every istiod runs the same one.
        tag = control_plane_version(snapshot)
        source = "image tag shared by every istiod pod"
    version = IstioVersion.parse(tag)
    return (version, source, None) if version else (None, "", problem)
