"""Envoy's ``/clusters?format=json``: every upstream host with its health flags, outlier state and host counters.

The admin handler (envoyproxy/envoy source/server/admin/clusters_handler.cc, docs/root/operations/admin.rst
"/clusters") writes each host's ``health_status`` (``failed_outlier_check``, ``failed_active_health_check``,
``eds_health_status`` …) and its per-host counters (``cx_connect_fail``, ``rq_total``, ``rq_error``,
``rq_success``, ``rq_timeout``, gauge ``rq_active``).  Per-host counters are Envoy's primitive host stats, not
entries of the stats store, so Istio's stats matcher never hides them: with Istio's defaults this is the only
per-upstream evidence a sidecar keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from commands.checks.envoy.names import ClusterName

# health_status flags that take a host out of load balancing (envoy/admin/v3/clusters.proto HostHealthStatus).
OUTLIER = "failed_outlier_check"
ACTIVE_HEALTH_CHECK = "failed_active_health_check"
_EXCLUDING_FLAGS = (OUTLIER, ACTIVE_HEALTH_CHECK, "failed_eds_health", "excluded_via_immediate_hc_fail",
                    "active_hc_timeout")
# EDS health Istio sends: UNHEALTHY for not-ready endpoints it keeps (services that support unhealthy endpoints),
# DRAINING for terminating ones (pilot/pkg/xds/endpoints/endpoint_builder.go).
_EDS_EXCLUDED = {"UNHEALTHY", "DRAINING", "TIMEOUT"}


@dataclass(frozen=True)
class Host:
    address: str
    counters: Mapping[str, int] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    """``failed_outlier_check`` and the other health flags that are true."""
    eds_health: str = "HEALTHY"

    def __getitem__(self, counter: str) -> int:
        return self.counters.get(counter, 0)

    @property
    def healthy(self) -> bool:
        return not (self.flags & set(_EXCLUDING_FLAGS)) and self.eds_health not in _EDS_EXCLUDED

    @property
    def ejected(self) -> bool:
        return OUTLIER in self.flags

    @property
    def abandoned(self) -> int:
        """Requests sent to this host that ended with no answer and no error: the caller went away (DC).
        rq_total counts attempts sent; rq_success/rq_error count answered or failed ones; rq_active is in flight."""
        return max(self["rq_total"] - self["rq_success"] - self["rq_error"] - self["rq_active"], 0)


@dataclass(frozen=True)
class ClusterHosts:
    name: str
    hosts: tuple[Host, ...] = ()

    @property
    def cluster(self) -> ClusterName:
        return ClusterName.parse(self.name)

    @property
    def healthy(self) -> list[Host]:
        return [h for h in self.hosts if h.healthy]

    @property
    def ejected(self) -> list[Host]:
        return [h for h in self.hosts if h.ejected]

    def total(self, counter: str) -> int:
        return sum(h[counter] for h in self.hosts)

    @property
    def abandoned(self) -> int:
        return sum(h.abandoned for h in self.hosts)


def parse_clusters(answer: Any) -> dict[str, ClusterHosts]:
    """``/clusters?format=json`` -> cluster name -> its hosts (numbers arrive as strings, zeros are left out)."""
    statuses = answer.get("cluster_statuses") if isinstance(answer, Mapping) else None
    clusters: dict[str, ClusterHosts] = {}
    for status in statuses or []:
        name = str(status.get("name", ""))
        clusters[name] = ClusterHosts(name, tuple(_host(h) for h in status.get("host_statuses") or []))
    return clusters


def _host(status: Mapping[str, Any]) -> Host:
    counters = {}
    for stat in status.get("stats") or []:
        try:
            counters[str(stat["name"])] = int(stat.get("value", 0))
        except (KeyError, TypeError, ValueError):
            continue
    health = status.get("health_status") or {}
    flags = frozenset(name for name, value in health.items() if value is True)
    socket = (status.get("address") or {}).get("socket_address") or {}
    address = f"{socket.get('address', '?')}:{socket.get('port_value', '?')}"
    return Host(address=address, counters=counters, flags=flags,
                eds_health=str(health.get("eds_health_status", "HEALTHY")))
