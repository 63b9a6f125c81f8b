"""The ``envoy`` check: every way a request through a sidecar fails (docs/response-flags.md), its memory and stats.

It reads ``/stats``, ``/clusters?format=json`` (host health and outlier state, never hidden by Istio's stats
matcher), ``/memory``, and ``/config_dump`` only when direct 502s may be REGISTRY_ONLY drops.  Silence is earned:
a sidecar with no traffic, or whose evidence could not be read, gets a finding that says so.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from commands import codes
from commands.authz.explain import denial_findings
from commands.checks.envoy.breakers import breaker_findings
from commands.checks.envoy.failures import failure_findings, passthrough_findings
from commands.checks.envoy.global_rate_limit import global_rate_limit_findings
from commands.checks.envoy.hosts import ClusterHosts, parse_clusters
from commands.checks.envoy.idle_timeouts import idle_timeout_findings, without_idle_timeout_echoes
from commands.checks.envoy.listeners import holds_block_all, listener_findings
from commands.checks.envoy.local_replies import local_replies_seen, local_reply_findings
from commands.checks.envoy.names import CONTROL_PLANE_CLUSTERS, PASSTHROUGH, ClusterName
from commands.checks.envoy.stats import STATS_INCLUSION_REGEX, EnvoyStats, parse_stats
from commands.checks.registry import CheckContext, check
from commands.cluster.endpoints import Endpoint
from commands.cluster.pods import owner_deployment
from commands.cluster.quantity import human_bytes
from commands.cluster.snapshot import Snapshot
from commands.errors import MeshbotError
from commands.findings import Finding, Remediation
from commands.resources.references import PodRef

STATS_PATH = "/stats"
CLUSTERS_PATH = "/clusters?format=json"
MEMORY_PATH = "/memory"
CONFIG_DUMP_PATH = "/config_dump"
MIB = 2**20


@dataclass(frozen=True)
class Evidence:
    """What one sidecar's admin API answered."""

    stats: EnvoyStats
    hosts: Mapping[str, ClusterHosts] | None
    """None when /clusters could not be read (``hosts_problem`` says why)."""
    memory: int | None
    hosts_problem: str = ""
    registry_only: bool = False


# AuthorizationPolicies (and the namespaces and workloads their sources name) let a 403 name its policy.
@check("envoy", kinds=("Pod", "AuthorizationPolicy", "Namespace", "Deployment"),
       summary="Envoy sidecars: every response flag (UH, UF, UO, NR, URX, UC, UT, DC, NC, RBAC 403, UAEX, RL, "
               "RLSE, SI, FI/DI, REGISTRY_ONLY, passthrough), rejected config, memory and stats count")
def envoy(ctx: CheckContext) -> list[Finding]:
    if ctx.endpoints is None:
        return [_skipped("no Envoy admin endpoint configured (give --envoy-admin or a cluster)")]
    targets = ctx.endpoints.envoy_targets(ctx.snapshot, ctx.namespace)
    if not targets:
        return [_skipped("no running sidecars to inspect")]
    findings: list[Finding] = []
    for target in targets:
        try:
            with ctx.endpoints.open_envoy(target, ctx.snapshot) as endpoint:
                evidence = read_evidence(endpoint, ctx.thresholds.min_flag_failures)
        except MeshbotError as exc:
            findings.append(admin_unreachable(target, exc, check="envoy"))
            continue
        findings.extend(sidecar_findings(target, evidence, ctx))
    return findings


def read_evidence(endpoint: Endpoint, floor: int) -> Evidence:
    """Read the admin paths; /stats and /memory must answer, /clusters and /config_dump may fail alone."""
    stats = parse_stats(endpoint.get_text(STATS_PATH))
    memory = memory_bytes(endpoint.get_json(MEMORY_PATH))
    hosts: Mapping[str, ClusterHosts] | None = None
    problem = ""
    try:
        hosts = parse_clusters(endpoint.get_json(CLUSTERS_PATH))
    except MeshbotError as exc:
        problem = f"{CLUSTERS_PATH} did not answer ({exc})"
    registry_only = False
    if any(m["rq_direct_response"] >= floor for p, m in stats.connection_managers.items() if p.startswith("outbound_")):
        # Only then is the (large) config dump worth reading: a direct 502 is a drop only under block_all.
        try:
            registry_only = holds_block_all(endpoint.get_json(CONFIG_DUMP_PATH))
        except MeshbotError:
            registry_only = False
    return Evidence(stats=stats, hosts=hosts, memory=memory, hosts_problem=problem, registry_only=registry_only)


def sidecar_findings(target: PodRef, evidence: Evidence, ctx: CheckContext) -> Iterator[Finding]:
    stats, hosts = evidence.stats, evidence.hosts
    idle_timeouts = list(idle_timeout_findings(target, stats, ctx.thresholds))
    for name in _service_clusters(stats, hosts):
        cluster_stats = stats.clusters.get(name)
        if cluster_stats is not None:
            yield from breaker_findings(target, cluster_stats, ctx.thresholds)
            yield from global_rate_limit_findings(target, cluster_stats, ctx.thresholds)
        failures = failure_findings(target, ClusterName.parse(name), cluster_stats,
                                    hosts.get(name) if hosts is not None else None, ctx.thresholds)
        yield from without_idle_timeout_echoes(failures, idle_timeouts)
    if PASSTHROUGH in stats.clusters or PASSTHROUGH in (hosts or {}):
        yield from passthrough_findings(target, stats.clusters.get(PASSTHROUGH),
                                        (hosts or {}).get(PASSTHROUGH), ctx.thresholds)
    listener = list(listener_findings(target, stats, ctx.thresholds, registry_only=evidence.registry_only))
    yield from listener
    yield from local_reply_findings(target, stats, ctx.thresholds)
    yield from idle_timeouts
    yield from _policies_behind_denials(target, listener, ctx.snapshot)
    yield from _unchecked_findings(target, evidence)
    yield from _resource_findings(target, stats, evidence.memory, ctx)


def _policies_behind_denials(target: PodRef, findings: list[Finding], snapshot: Snapshot) -> Iterator[Finding]:
    """For RBAC 403s on the pod's own ports, the AuthorizationPolicies that decide them (MB7004, commands.authz),
    when the snapshot holds the pod: the first step then names the policy, not only istioctl's check."""
    denied = sum(int(f.evidence.get("rbac.denied", 0)) for f in findings if f.code == "MB4022")
    pod = snapshot.get("Pod", target.namespace, target.name) if denied else None
    if pod is not None:
        yield from denial_findings(snapshot, pod, denied=denied)


def _service_clusters(stats: EnvoyStats, hosts: Mapping[str, ClusterHosts] | None) -> list[str]:
    # Outbound services, and the pod's own inbound ports (an app that does not listen is a UF there).
    names = {n for n in [*stats.clusters, *(hosts or {})]
             if ClusterName.parse(n).is_service or ClusterName.parse(n).is_inbound}
    return sorted(names)


def _unchecked_findings(target: PodRef, evidence: Evidence) -> Iterator[Finding]:
    """What could not be checked, so that no finding never reads as "healthy" when nothing was seen."""
    origin, pod, stats = f"Pod {target}", str(target), evidence.stats
    if hidden := _hidden_service_clusters(evidence):
        yield codes.finding(
            "MB4012", origin=origin, pod=pod, count=hidden,
            evidence={"active_clusters": stats.active_clusters, "exported_clusters": sorted(stats.clusters)},
            remediation=Remediation(
                # Istio's default inclusion list is cluster_manager, listener_manager, server, cluster.xds-grpc
                # (istio/istio pkg/bootstrap/config.go, tools/packaging/common/envoy_bootstrap.json; docs:
                # https://istio.io/latest/docs/ops/configuration/telemetry/envoy-stats/). The regex keeps only
                # the counters this check reads; a prefix such as cluster.outbound exports every cluster stat
                # and costs memory on every sidecar (MB4007).
                "Export the upstream stats this check reads: set proxyStatsMatcher.inclusionRegexps to "
                f"['{STATS_INCLUSION_REGEX}'] in the workload's proxy.istio.io/config pod annotation (merge it "
                "into an existing annotation, which may hold other ProxyConfig settings) or in "
                "meshConfig.defaultConfig for every sidecar. The matcher is part of Envoy's bootstrap, so it "
                "takes effect when the pods restart",
                command=f"istioctl proxy-config bootstrap {target.name} -n {target.namespace} -o json"))
    if evidence.hosts is None:
        yield codes.finding("MB4027", origin=origin, pod=pod, reason=evidence.hosts_problem,
                            evidence={"reason": evidence.hosts_problem})
    if not _traffic_seen(evidence):
        what = ("no request counted on its listeners or clusters and no upstream host called"
                if evidence.hosts is not None else "no request counted in its exported stats")
        yield codes.finding("MB4026", origin=origin, pod=pod, what=what,
                            evidence={"service_clusters": len(_service_clusters(stats, evidence.hosts))})


def _hidden_service_clusters(evidence: Evidence) -> int:
    """How many service clusters /clusters lists whose stats /stats does not export (Istio's default matcher
    exports none of them); without /clusters, the count the cluster manager's gauge implies."""
    if evidence.hosts is None:
        return evidence.stats.hidden_service_clusters
    return sum(1 for name in evidence.hosts
               if ClusterName.parse(name).is_service and name not in evidence.stats.clusters)


def _traffic_seen(evidence: Evidence) -> bool:
    stats = evidence.stats
    hosts = (evidence.hosts or {}).values()
    # Any cluster but istiod's: BlackHoleCluster and PassthroughCluster traffic is traffic too.
    return (any(c.requests or c["upstream_cx_total"] or c["upstream_cx_none_healthy"]
                for c in stats.clusters.values() if c.name not in CONTROL_PLANE_CLUSTERS)
            or any(m["downstream_rq_total"] for m in stats.connection_managers.values())
            or any(r.denied or r.allowed for r in stats.rbac)
            or any(h.total("rq_total") or h.total("cx_total") for h in hosts if h.name not in CONTROL_PLANE_CLUSTERS)
            or stats.blackhole_tcp_connections > 0 or local_replies_seen(stats))


def admin_unreachable(target: PodRef, exc: MeshbotError, *, check: str) -> Finding:
    """MB4006 for a sidecar whose admin API did not answer; shared by every check that reads it."""
    endpoint = getattr(exc, "endpoint", None) or f"{target}:15000"
    return codes.finding(
        "MB4006", check=check, origin=f"Pod {target}", pod=str(target), endpoint=endpoint, reason=str(exc),
        evidence={"endpoint": endpoint, "reason": str(exc)},
        remediation=Remediation("Check the pod is running and its istio-proxy container is ready; the admin "
                                "API listens on 127.0.0.1:15000 inside the pod",
                                command=f"kubectl -n {target.namespace} get pod {target.name} -o wide"))


def memory_bytes(answer: Any) -> int | None:
    """Envoy's memory use from ``/memory`` (numbers arrive as strings), or None when absent."""
    if not isinstance(answer, Mapping):
        return None
    # total_physical_bytes is tcmalloc's estimate of the memory actually backed by RAM
    # (heap minus pages returned to the OS, plus allocator metadata): the closest field
    # to the RSS the OOM killer sees. heap_size also counts unmapped pages.
    for name in ("total_physical_bytes", "heap_size", "allocated"):
        try:
            return int(answer[name])
        except (KeyError, TypeError, ValueError):
            continue
    return None


def _skipped(reason: str) -> Finding:
    return codes.finding("MB0004", check="envoy", origin="check envoy", check_name="envoy", reason=reason)


def _resource_findings(target: PodRef, stats: EnvoyStats, memory: int | None,
                       ctx: CheckContext) -> Iterator[Finding]:
    origin, pod, limits = f"Pod {target}", str(target), ctx.thresholds
    if memory is not None:
        error, warning = limits.envoy_memory_error_mb * MIB, limits.envoy_memory_warning_mb * MIB
        evidence = {"memory_bytes": memory, "stats_count": stats.count}
        if memory > error:
            yield codes.finding("MB4005", origin=origin, pod=pod, memory=human_bytes(memory),
                                threshold=human_bytes(error), evidence=evidence,
                                remediation=_restart_remediation(target, ctx.snapshot))
        elif memory > warning:
            yield codes.finding("MB4004", origin=origin, pod=pod, memory=human_bytes(memory),
                                threshold=human_bytes(warning), evidence=evidence,
                                remediation=_restart_remediation(target, ctx.snapshot))
    if stats.count > limits.stats_count_warning:
        yield codes.finding("MB4007", origin=origin, pod=pod, count=stats.count, threshold=limits.stats_count_warning,
                            evidence={"stats_count": stats.count}, remediation=Remediation(
                                "Keep only the stats you graph: set proxyStatsMatcher in the pod's "
                                "proxy.istio.io/config annotation or meshConfig.defaultConfig, and scope the "
                                "sidecar's clusters with a Sidecar resource"))


def _restart_remediation(target: PodRef, snapshot: Snapshot) -> Remediation:
    summary = ("Restart the workload to give Envoy fresh memory; if it grows back, scope its config with a "
               "Sidecar resource and its stats with proxyStatsMatcher")
    pod = snapshot.get("Pod", target.namespace, target.name)
    deployment = owner_deployment(pod) if pod else None
    if deployment:
        return Remediation(summary, command=f"kubectl -n {target.namespace} rollout restart deployment/{deployment}",
                           action=f"restart {deployment} -n {target.namespace}")
    # Deleting the pod is never a first step: find its owner and roll it, which keeps the replicas serving.
    return Remediation(summary + "; first find the pod's owner and restart that with kubectl rollout restart",
                       command=f"kubectl -n {target.namespace} get pod {target.name} "
                               "-o jsonpath='{.metadata.ownerReferences[*].name}'")
