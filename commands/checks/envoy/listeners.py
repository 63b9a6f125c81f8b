"""What the listeners and managers say: no route (NR), no cluster (NC), RBAC 403s, external authorization (UAEX),
REGISTRY_ONLY drops and rejected xDS updates.  Each finding takes its cause and first step from ``flags.FAILURE_MODES``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from commands import codes
from commands.checks.envoy.failures import significant
from commands.checks.envoy.flags import FAILURE_MODES
from commands.checks.envoy.names import BLACKHOLE, listener_port
from commands.checks.envoy.stats import EnvoyStats
from commands.findings import Finding
from commands.resources.references import PodRef
from commands.thresholds import Thresholds

BLOCK_ALL = "block_all"
"""REGISTRY_ONLY's catch-all virtual host and route (istio/istio pilot/pkg/networking/util/util.go BlackHole)."""


def listener_findings(target: PodRef, stats: EnvoyStats, thresholds: Thresholds, *,
                      registry_only: bool = False) -> Iterator[Finding]:
    """``registry_only``: the sidecar's routes hold the block_all virtual host (``holds_block_all``), which istiod
    puts on every outbound HTTP route under REGISTRY_ONLY; its direct 502s are then drops."""
    floor = thresholds.min_flag_failures
    for prefix, manager in sorted(stats.connection_managers.items()):
        where = listener_port(prefix)
        port = where.rpartition(" ")[2]
        requests = manager["downstream_rq_total"]
        for code, counter, cause in (("MB4020", "no_route", "no-virtual-host"),
                                     ("MB4021", "no_cluster", "missing-subset")):
            if significant(manager[counter], requests, thresholds):
                yield _finding(target, code, cause, listener=where, count=manager[counter], port=port,
                               evidence={f"{where} {counter}": manager[counter]})
        checked = manager["ext_authz.ok"] + manager["ext_authz.denied"] + manager["ext_authz.error"]
        for counter, cause, what in (("ext_authz.denied", "provider-denies", "denied by the external authorizer"),
                                     ("ext_authz.error", "provider-down",
                                      "refused because the external authorizer did not answer")):
            if significant(manager[counter], checked, thresholds):
                yield _finding(target, "MB4028", cause, listener=where, port=port, count=manager[counter],
                               what=what, evidence={f"{where} {counter}": manager[counter],
                                                    f"{where} ext_authz.ok": manager["ext_authz.ok"]})
        if (registry_only and prefix.startswith("outbound_")
                and significant(manager["rq_direct_response"], requests, thresholds)):
            yield _finding(target, "MB4024", "unregistered-destination", listener=where, port=port,
                           count=manager["rq_direct_response"], what="HTTP requests answered 502 by block_all",
                           evidence={f"{where} rq_direct_response": manager["rq_direct_response"]})
    yield from _blackhole_tcp(target, stats, floor)
    yield from _rbac(target, stats, thresholds)
    for what, rejected in sorted(stats.xds_rejected.items()):
        if rejected:
            yield _finding(target, "MB4025", "invalid-config", count=rejected, what=what, port="",
                           evidence={f"{what} update_rejected": rejected})


def _blackhole_tcp(target: PodRef, stats: EnvoyStats, floor: int) -> Iterator[Finding]:
    blackhole = stats.clusters.get(BLACKHOLE)
    dropped = max(blackhole["upstream_cx_none_healthy"] if blackhole else 0, stats.blackhole_tcp_connections)
    if dropped >= floor:
        yield _finding(target, "MB4024", "unregistered-destination", listener="its outbound traffic", port="",
                       count=dropped, what="TCP connections dropped by BlackHoleCluster",
                       evidence={"BlackHoleCluster connections": dropped})


def _rbac(target: PodRef, stats: EnvoyStats, thresholds: Thresholds) -> Iterator[Finding]:
    for rbac in sorted(stats.rbac, key=lambda r: r.scope):
        where = listener_port(rbac.scope.removeprefix("http.")) if rbac.scope != "tcp" else "TCP ports"
        port = where.rpartition(" ")[2]
        evidence = {"scope": where, "rbac.denied": rbac.denied, "rbac.allowed": rbac.allowed,
                    "shadow_denied": rbac.shadow_denied}
        if significant(rbac.denied, rbac.denied + rbac.allowed, thresholds):
            yield _finding(target, "MB4022", "policy-denies", listener=where, port=port, count=rbac.denied,
                           allowed=rbac.allowed, evidence=evidence)
        elif rbac.shadow_denied:
            # A dry-run policy (istio.io/dry-run annotation) only logs and counts: nothing was denied.
            yield codes.finding("MB4023", origin=f"Pod {target}", pod=str(target), listener=where,
                                count=rbac.shadow_denied, evidence=evidence)


def _finding(target: PodRef, code: str, cause: str, *, evidence: Mapping[str, Any], port: str,
             **fields: Any) -> Finding:
    chosen = FAILURE_MODES[code].cause(cause)
    command_fields = {"pod": target.name, "namespace": target.namespace, "listener_port": port}
    return codes.finding(code, origin=f"Pod {target}", pod=str(target), cause=chosen.state,
                         evidence={"cause": cause, **evidence}, remediation=chosen.remediation(**command_fields),
                         **fields)


def holds_block_all(config_dump: Any) -> bool:
    """True when any route configuration in ``/config_dump`` has the block_all virtual host."""
    stack = [config_dump]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("name") == BLOCK_ALL and "routes" in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
