"""Istio's Envoy cluster names turned into what a person calls them: ``payment.prod:8080``, never ``outbound|…``.

istiod names service clusters ``DIRECTION|PORT|SUBSET|HOST`` (istio/istio pilot/pkg/model/service.go
BuildSubsetKey) and, since it sets ``alt_stat_name`` to the name plus ``;`` (pilot/pkg/networking/core/
cluster_builder.go buildCluster, util.DelimitedStatsPrefix, constants.StatPrefixDelimiter), a sidecar's stats read
``cluster.outbound|8080||payment.prod.svc.cluster.local;.upstream_rq_503``.  Those names are for machines: findings
name the service and port, and suggested commands use ``--fqdn``/``--port``.
"""

from __future__ import annotations

from dataclasses import dataclass

STAT_DELIMITER = ";"
BLACKHOLE = "BlackHoleCluster"
PASSTHROUGH = "PassthroughCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"
CONTROL_PLANE_CLUSTERS = frozenset({"xds-grpc"})
"""Istio's bootstrap cluster to istiod, whose stats Istio always exports (istio/istio pkg/bootstrap/config.go,
requiredEnvoyStatsMatcherInclusionPrefixes): it says nothing about whether service clusters are exported."""
_KUBERNETES_SUFFIX = ".svc.cluster.local"


@dataclass(frozen=True)
class ClusterName:
    """One Envoy cluster, read from its Istio name."""

    raw: str
    direction: str = ""
    """``outbound``, ``inbound`` or ``""`` (BlackHoleCluster, xds-grpc, a non-Istio name)."""
    port: int | None = None
    subset: str = ""
    host: str = ""
    """The service's FQDN (``payment.prod.svc.cluster.local``) or a ServiceEntry host."""

    @classmethod
    def parse(cls, name: str) -> ClusterName:
        name = name.removesuffix(STAT_DELIMITER)
        parts = name.split("|")
        if len(parts) != 4 or parts[0] not in ("outbound", "inbound") or not parts[1].isdigit():
            return cls(raw=name)
        return cls(raw=name, direction=parts[0], port=int(parts[1]), subset=parts[2], host=parts[3])

    @property
    def is_service(self) -> bool:
        """A cluster for a mesh service or ServiceEntry (not istiod's, not a catch-all)."""
        return self.direction == "outbound" and bool(self.host)

    @property
    def is_inbound(self) -> bool:
        """The pod's own port: its sidecar forwards to the application in the pod through this cluster."""
        return self.direction == "inbound" and self.port is not None

    @property
    def service(self) -> str:
        """``payment.prod:8080``, ``payment.prod:8080 subset v2``, ``api.stripe.com:443``, ``inbound port 9080``."""
        if self.direction == "inbound":
            return f"its own inbound port {self.port}"
        if not self.host:
            return {BLACKHOLE: "destinations outside the service registry",
                    PASSTHROUGH: "destinations outside the mesh"}.get(self.raw, self.raw)
        short = self.host.removesuffix(_KUBERNETES_SUFFIX)
        subset = f" subset {self.subset}" if self.subset else ""
        return f"{short}:{self.port}{subset}"

    def istioctl_filter(self) -> str:
        """``--fqdn HOST --port PORT [--subset S]``: how istioctl proxy-config selects this cluster."""
        if not self.host:
            return ""
        subset = f" --subset {self.subset}" if self.subset else ""
        return f" --fqdn {self.host} --port {self.port}{subset}"

    @property
    def kubernetes_service(self) -> tuple[str, str] | None:
        """(namespace, service) when the host is a Kubernetes Service of this cluster's domain."""
        if not self.host.endswith(_KUBERNETES_SUFFIX):
            return None
        name, _, namespace = self.host.removesuffix(_KUBERNETES_SUFFIX).partition(".")
        return (namespace, name) if name and namespace else None


def listener_port(stat_prefix: str) -> str:
    """``outbound_0.0.0.0_8080;`` -> ``outbound port 8080``; ``inbound_0.0.0.0_9080;`` -> ``inbound port 9080``.

    Istio's HTTP connection managers are prefixed ``DIRECTION_ADDRESS_PORT;`` (core/listener.go,
    core/listener_inbound.go StatPrefix); anything else is named as it is.
    """
    prefix = stat_prefix.removesuffix(STAT_DELIMITER)
    direction, _, rest = prefix.partition("_")
    port = rest.rpartition("_")[2]
    if direction in ("outbound", "inbound") and port.isdigit():
        return f"{direction} port {port}"
    return prefix
