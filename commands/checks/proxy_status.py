"""The ``proxy-status`` check: what ``istioctl proxy-status`` shows, from istiod's ``/debug/syncz``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from commands import codes
from commands.checks.disconnected import disconnected_findings
from commands.checks.istiod_metrics import METRICS_PATH, parse_samples
from commands.checks.push_health import PUSH_METRICS, push_findings
from commands.checks.registry import CheckContext, check
from commands.checks.rejections import group_rejections
from commands.checks.syncz import SYNCZ_PATH, ProxySync, SyncState, parse_syncz
from commands.checks.versions import Istiod, IstioVersion, Skew, istiod_version, version_skew
from commands.cluster.pods import ISTIOD_CONTAINER, not_ready, terminating
from commands.cluster.snapshot import Resource
from commands.errors import MeshbotError
from commands.findings import Finding, Remediation

# Envoy names what it refused: "Error adding/updating listener(s) NAME: reason" (envoy
# source/common/listener_manager/lds_api.cc) and "Error adding/updating cluster(s) NAME: reason"
# (source/common/upstream/cds_api_helper.cc).
_REJECTED_RESOURCE = re.compile(r"Error adding/updating (listener|cluster)\(s\) ([^\s:,]+)")

# Which Istio resources produce each xDS type (istio pilot/pkg/networking/core: cluster_builder.go applies
# DestinationRules and ServiceEntries, listener.go/gateway.go build listeners from Sidecars and Gateways,
# httproute.go builds routes from VirtualServices, extension_config_builder.go serves WasmPlugins; any of
# them can be patched by an EnvoyFilter, pilot/pkg/networking/core/envoyfilter).
CONFIG_BEHIND_TYPE = {
    "CDS": "the DestinationRule, ServiceEntry or EnvoyFilter that shapes the cluster",
    "LDS": "the Gateway, Sidecar or EnvoyFilter that shapes the listener",
    "RDS": "the VirtualService or EnvoyFilter that shapes the route",
    "EDS": "the ServiceEntry or WorkloadEntry that supplies the endpoints",
    "ECDS": "the WasmPlugin or EnvoyFilter extension config",
}


def config_to_fix(xds_type: str, error: str) -> str:
    """Point at the Istio config behind a rejection, naming the Envoy resource when the error names it."""
    match = _REJECTED_RESOURCE.search(error)
    generic = CONFIG_BEHIND_TYPE.get(xds_type, f"the Istio config that produces {xds_type}")
    if not match:
        return generic
    kind, name = match.groups()
    if kind == "cluster" and name.count("|") == 3:
        # Sidecar/gateway cluster names are direction|port|subset|host (pilot/pkg/model/service.go BuildSubsetKey).
        host = name.rsplit("|", 1)[1]
        return f"the DestinationRule, ServiceEntry or EnvoyFilter for host {host} (Envoy cluster {name})"
    return f"{generic} (Envoy {kind} {name})"




@check("proxy-status", kinds=("Pod", "EnvoyFilter", "Gateway"),
       summary="xDS sync state of every proxy (istioctl proxy-status) from istiod /debug/syncz")
def proxy_status(ctx: CheckContext) -> list[Finding]:
    if ctx.endpoints is None:
        return [_skipped("no istiod endpoint configured (give --istiod-url or a cluster)")]
    targets = ctx.endpoints.istiod_targets(ctx.snapshot)
    if not targets:
        return [_skipped(f"no running istiod pods in {ctx.snapshot.istio_namespace} and no --istiod-url")]
    passed_over = {t.qualified_name: why for t in targets if isinstance(t, Resource) and (why := _not_serving(t))}
    targets = [t for t in targets if isinstance(t, str) or t.qualified_name not in passed_over]
    if not targets:
        return [_skipped("no Ready istiod pod to ask: " + "; ".join(f"{name} {why}" for name, why in passed_over.items()))]
    findings: list[Finding] = []
    proxies: list[ProxySync] = []
    istiods: dict[str, Istiod] = {}
    for target in targets:
        name = target if isinstance(target, str) else target.qualified_name
        try:
            with ctx.endpoints.open_istiod(target) as endpoint:
                entries = endpoint.get_json(SYNCZ_PATH)
                version, source, problem = istiod_version(endpoint, target, ctx.snapshot)
                findings.extend(_push_health(endpoint, target, ctx))
            istiod = Istiod(name, version, source or None, problem,
                            pod=target if isinstance(target, Resource) else None)
            served = parse_syncz(entries, istiod=name, resources_map=True if istiod.serves_resources_map else None)
        except MeshbotError as exc:
            findings.append(_unreachable(target, exc))
            continue
        # Each istiod holds only its own connections, so each proxy is judged against the istiod that serves it.
        istiods[name] = istiod
        proxies.extend(served)
    if not proxies and findings:
        return findings
    in_scope = [p for p in _connected_now(proxies) if ctx.in_scope(p.namespace)]
    findings.append(_summary(in_scope, istiods=len(targets), passed_over=passed_over))
    for proxy in sorted(in_scope, key=lambda p: p.proxy):
        served_by = istiods.get(proxy.istiod)
        findings.extend(_sync_findings(proxy, served_by, proxy.evidence(served_by)))
        findings.extend(_version_findings(proxy, served_by, proxy.evidence(served_by)))
    findings.extend(_unknown_versions(in_scope, istiods))
    findings.extend(group_rejections(findings, ctx.snapshot))
    if len(istiods) == len(targets):  # a proxy missing here may hold its stream on an istiod that did not answer
        connected = {(p.pod_name, p.namespace or "") for p in proxies}
        pods = [p for p in ctx.snapshot.of_kind("Pod") if ctx.in_scope(p.namespace)]
        findings.extend(disconnected_findings(pods, connected, now=ctx.now))
    return findings


def _push_health(endpoint: Any, target: str | Resource, ctx: CheckContext) -> list[Finding]:
    """Listener conflicts and push-queue backlog from the istiod's /metrics; what could not be read is said."""
    origin = f"istiod {target}" if isinstance(target, str) else target.origin
    try:
        samples = parse_samples(endpoint.get_text(METRICS_PATH), PUSH_METRICS)
    except MeshbotError as exc:
        return [codes.finding("MB0004", check="proxy-status", origin=origin,
                              check_name="proxy-status (istiod push health)", reason=str(exc))]
    return list(push_findings(samples, origin, ctx.snapshot.istio_namespace))


def _not_serving(pod: Resource) -> str | None:
    """Why an istiod pod is not asked, None when it serves proxies now.

    A terminating or not-Ready istiod is out of the istiod Service's endpoints, so no proxy connects to it any
    more; the connections it still lists are draining ones whose proxies are reconnecting elsewhere (istiod lists
    only its own connections, pilot/pkg/xds/debug.go SyncStatus), and reading them would show a moved proxy
    twice, STALE on the old pod.
    """
    if terminating(pod):
        return "is terminating"
    if not_ready(pod):
        return "is not Ready"
    return None


def _connected_now(proxies: list[ProxySync]) -> list[ProxySync]:
    """Each proxy once, from the istiod it is connected to now.

    During a rollout two Ready istiods can list the same proxy until the old stream closes; the one that pushed
    to it last holds its current connection (a proxy takes config from one istiod at a time).  Without
    ``sentTime`` (syncz before 1.23) the first istiod asked keeps it.
    """
    best: dict[tuple[str | None, str], ProxySync] = {}
    for proxy in proxies:
        key = (proxy.cluster_id, proxy.proxy)
        current = best.get(key)
        if current is None or _fresher(proxy, current):
            best[key] = proxy
    return list(best.values())


def _fresher(candidate: ProxySync, current: ProxySync) -> bool:
    if candidate.last_sent is None:
        return False
    return current.last_sent is None or candidate.last_sent > current.last_sent


def _skipped(reason: str) -> Finding:
    return codes.finding("MB0004", check="proxy-status", origin="check proxy-status",
                         check_name="proxy-status", reason=reason)


def _unreachable(target: str | Resource, exc: MeshbotError) -> Finding:
    endpoint = getattr(exc, "endpoint", None) or (target if isinstance(target, str) else target.qualified_name)
    origin = f"Pod {target.qualified_name}" if isinstance(target, Resource) else f"istiod {target}"
    return codes.finding("MB2005", origin=origin, endpoint=endpoint, reason=str(exc),
                         evidence={"endpoint": endpoint},
                         remediation=Remediation("Check istiod is running and its monitoring port 15014 is reachable",
                                                 command="kubectl -n istio-system get pods -l app=istiod -o wide"))


def _summary(proxies: list[ProxySync], istiods: int, passed_over: Mapping[str, str]) -> Finding:
    tally = {state: 0 for state in (SyncState.SYNCED, SyncState.STALE, SyncState.ERROR, SyncState.NOT_SENT)}
    for proxy in proxies:
        tally[proxy.overall] += 1
    return codes.finding("MB2000", origin="istiod /debug/syncz", synced=tally[SyncState.SYNCED],
                         stale=tally[SyncState.STALE], error=tally[SyncState.ERROR],
                         not_sent=tally[SyncState.NOT_SENT], total=len(proxies), istiods=istiods,
                         evidence={"synced": tally[SyncState.SYNCED], "stale": tally[SyncState.STALE],
                                   "error": tally[SyncState.ERROR], "not_sent": tally[SyncState.NOT_SENT],
                                   "proxies": len(proxies), "istiods_not_asked": dict(passed_over)})


def _states(proxy: ProxySync, types: Iterable[str]) -> str:
    return ", ".join(f"{t} {proxy.types[t].state}" for t in types)


def _sync_findings(proxy: ProxySync, istiod: Istiod | None, evidence: dict[str, Any]) -> Iterator[Finding]:
    rejected = proxy.types_in(SyncState.ERROR)
    if rejected:
        error = proxy.types[rejected[0]].last_error or ""
        # triage reads last_error: a NACK is the config's fault, not a busy or absent istiod.
        nack_evidence = {**evidence, "last_error": error}
        if proxy.is_ztunnel:
            yield codes.finding("MB2006", origin=proxy.origin, proxy=proxy.proxy, types="/".join(rejected),
                                error=error, evidence=nack_evidence, remediation=_ztunnel_rejected(proxy, rejected))
        else:
            yield codes.finding("MB2002", origin=proxy.origin, proxy=proxy.proxy, types="/".join(rejected),
                                error=error, evidence=nack_evidence,
                                remediation=_rejected(proxy, rejected[0], error))
    behind = proxy.types_in(SyncState.STALE, SyncState.NEVER_ACKNOWLEDGED)
    not_sent = proxy.not_sent_required()
    if proxy.is_ztunnel:
        if behind or not_sent:
            yield codes.finding("MB2007", origin=proxy.origin, proxy=proxy.proxy, types="/".join(behind + not_sent),
                                states=_states(proxy, behind + not_sent), evidence=evidence,
                                remediation=_ztunnel_not_synced(proxy))
        return
    if behind:
        yield codes.finding("MB2001", origin=proxy.origin, proxy=proxy.proxy, types="/".join(behind),
                            evidence=evidence, remediation=_stale(proxy))
    if not_sent:
        yield codes.finding("MB2003", origin=proxy.origin, proxy=proxy.proxy, types="/".join(not_sent),
                            evidence=evidence, remediation=_not_sent(proxy, istiod))


def _version_findings(proxy: ProxySync, istiod: Istiod | None, evidence: dict[str, Any]) -> Iterator[Finding]:
    proxy_version = IstioVersion.parse(proxy.version)
    if istiod is None or istiod.version is None or proxy_version is None:
        return
    skew = version_skew(proxy_version, istiod.version)
    if skew == Skew.SAME_MINOR:
        return
    args: dict[str, Any] = dict(origin=proxy.origin, proxy=proxy.proxy, proxy_version=proxy.version, istiod=istiod.name,
                istiod_version=str(istiod.version),
                evidence={**evidence, "istiod_version_source": istiod.version_source})
    if skew == Skew.ONE_MINOR_BEHIND:
        yield codes.finding("MB2009", what="ztunnel" if proxy.is_ztunnel else "Proxy",
                            remediation=_ztunnel_upgrade(proxy) if proxy.is_ztunnel else _reinject(proxy), **args)
        return
    ahead = proxy_version > istiod.version
    why = ("the data plane may not be newer than its control plane" if ahead
           else "istiod may be at most one minor version ahead of its proxies")
    if proxy.is_ztunnel:
        yield codes.finding("MB2008", why=why, remediation=_ztunnel_upgrade(proxy), **args)
    else:
        yield codes.finding("MB2004", why=why, remediation=_wrong_revision(proxy) if ahead else _reinject(proxy),
                            **args)


def _unknown_versions(proxies: list[ProxySync], istiods: Mapping[str, Istiod]) -> Iterator[Finding]:
    for istiod in istiods.values():
        if istiod.version is not None:
            continue
        count = sum(1 for p in proxies if p.istiod == istiod.name and p.version)
        if count:
            yield codes.finding("MB2010", origin=f"istiod {istiod.name}", istiod=istiod.name, count=count,
                                reason=istiod.version_problem or "no version known",
                                evidence={"istiod": istiod.name, "problem": istiod.version_problem})


# -- remediation texts -------------------------------------------------------------------------------------
# Envoy keeps serving the last config it accepted when it NACKs (xDS protocol, "ACK/NACK and resource type
# instance version": https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol), and istiod builds the
# same config from the same Istio resources for any new connection, so a restarted pod is sent the same
# rejected config; its listeners never warm and the new pod may not become ready.  Hence no restart advice.

NO_RESTART = ("Do not restart the pod: Envoy keeps serving the last config it accepted, and a new pod would be "
              "sent the same rejected config by istiod.")
ZTUNNEL_NO_RESTART = ("Leave the ztunnel pod running (no restart, no pod removal): it carries the traffic of every ambient pod on its "
                      "node, which would all be disrupted (https://istio.io/latest/docs/ambient/upgrade/helm/), and "
                      "its replacement gets the same config from istiod.")


def _proxy_log(proxy: ProxySync, container: str, grep: str | None = None) -> str | None:
    if not proxy.namespace:
        return None
    command = f"kubectl -n {proxy.namespace} logs {proxy.pod_name} -c {container}"
    return f"{command} | grep -i {grep}" if grep else f"{command} --since=15m"


def _rejected(proxy: ProxySync, xds_type: str, error: str) -> Remediation:
    # Envoy logs "gRPC config for <type URL> rejected: <error>" with the full, untrimmed text.
    return Remediation(f"Fix {config_to_fix(xds_type, error)}; the proxy acknowledges the next push once the "
                       f"config is valid. {NO_RESTART}",
                       command=_proxy_log(proxy, "istio-proxy", grep="rejected"))


# What istiod sends ztunnel (pilot/pkg/serviceregistry/kube/controller/ambient): WDS is built from Services,
# ServiceEntries, WorkloadEntries and pods; WADS from AuthorizationPolicies and PeerAuthentications.
ZTUNNEL_CONFIG = {"WDS": "the Service, ServiceEntry or WorkloadEntry named in the error",
                  "WADS": "the AuthorizationPolicy or PeerAuthentication named in the error"}


def _ztunnel_rejected(proxy: ProxySync, types: list[str]) -> Remediation:
    config = " or ".join(ZTUNNEL_CONFIG.get(t, f"the config behind {t}") for t in types)
    return Remediation(
        f"Compare this ztunnel's version with istiod's: an older ztunnel rejects config it does not understand "
        f"until it is upgraded (Istio upgrade note for istio/istio#57656). Otherwise fix {config}. "
        f"{ZTUNNEL_NO_RESTART}", command=_proxy_log(proxy, "istio-proxy"))


def _ztunnel_not_synced(proxy: ProxySync) -> Remediation:
    return Remediation(f"Usually a push still in flight: run the check again in a minute; if it persists, look at "
                       f"istiod's push health (pilot_proxy_queue_time, pilot_xds_push_time). {ZTUNNEL_NO_RESTART}",
                       command=_proxy_log(proxy, "istio-proxy"))


def _stale(proxy: ProxySync) -> Remediation:
    # pilot_proxy_queue_time / pilot_xds_push_time: pilot/pkg/xds/monitoring.go.
    summary = ("Usually a push still in flight: run the check again in a minute. If it stays stale, look at the "
               "istiod serving it (pushes queue behind a busy or memory-starved istiod: pilot_proxy_queue_time, "
               "pilot_xds_push_time) rather than at the pod.")
    if not proxy.resources_map:
        # Before 1.23 istiod dropped the NACK's error (pkg/xds/server.go), so a rejection looks exactly like this.
        summary += (" This istiod is older than 1.23 and cannot report a rejection: if it persists, search the proxy "
                    "log for 'rejected' and fix the config it names.")
    return Remediation(summary, command=_proxy_log(proxy, "istio-proxy", grep="rejected"))


def _not_sent(proxy: ProxySync, istiod: Istiod | None) -> Remediation:
    types = "/".join(proxy.not_sent_required())
    summary = (f"istiod has not pushed {types} since this proxy subscribed; a freshly connected proxy gets them "
               f"within seconds. If it persists, look for push errors about it in the log of istiod {proxy.istiod}.")
    if istiod is None or istiod.pod is None:
        return Remediation(summary)  # istiod given as a URL or a capture: no pod to read the log of
    pod = istiod.pod
    return Remediation(summary, command=f"kubectl -n {pod.namespace} logs {pod.name} -c {ISTIOD_CONTAINER} "
                                        f"| grep {proxy.pod_name}")


def _reinject(proxy: ProxySync) -> Remediation:
    # A sidecar's version changes only when its pod is re-created and re-injected
    # (https://istio.io/latest/docs/setup/upgrade/canary/#data-plane).
    return Remediation("Roll the workload so injection gives it the proxy of its istiod's revision. A rollout restart "
                       "replaces pods one at a time; a single-replica workload is briefly unavailable.",
                       command=(f"kubectl -n {proxy.namespace} get pod {proxy.pod_name} -o "
                                "jsonpath='{.metadata.ownerReferences[0].name}'") if proxy.namespace else None)


def _wrong_revision(proxy: ProxySync) -> Remediation:
    return Remediation("The proxy is newer than the istiod serving it: it was injected by a newer revision, or istiod "
                       "was rolled back. Point the workload at the istiod of its version (istio.io/rev label) or "
                       "upgrade this istiod; restarting alone injects the same newer proxy.",
                       command=(f"kubectl get namespace {proxy.namespace} --show-labels") if proxy.namespace else None)


def _ztunnel_upgrade(proxy: ProxySync) -> Remediation:
    return Remediation("Upgrade istiod first, then the ztunnel DaemonSet (helm upgrade ztunnel), one node at a time "
                       "with the node cordoned and drained: replacing a ztunnel disrupts all ambient traffic on its "
                       "node (https://istio.io/latest/docs/ambient/upgrade/helm/). Removing a ztunnel pod does not fix "
                       "this.", command=f"kubectl -n {proxy.namespace or 'istio-system'} get daemonset ztunnel -o wide")
