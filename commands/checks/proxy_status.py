"""The ``proxy-status`` check: what ``istioctl proxy-status`` shows, from istiod's ``/debug/syncz``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from commands import codes
from commands.checks.registry import CheckContext, check
from commands.errors import MeshbotError
from commands.findings import Finding, Remediation
from commands.cluster.pods import ISTIOD_CONTAINER, container_spec, image_tag, is_istiod
from commands.cluster.snapshot import Resource, Snapshot

SYNCZ_PATH = "/debug/syncz"

# syncz field prefix -> the xDS type name istioctl prints.
XDS_TYPES = {"cluster": "CDS", "listener": "LDS", "endpoint": "EDS", "route": "RDS", "extensionconfig": "ECDS"}
# Routes, endpoints and extension configs are legitimately never sent to some proxies.
MUST_BE_SENT = {"CDS", "LDS"}


class SyncState(StrEnum):
    SYNCED = "SYNCED"
    NOT_SENT = "NOT SENT"
    STALE = "STALE"
    NEVER_ACKNOWLEDGED = "STALE (Never Acknowledged)"


def sync_state(sent: str | None, acked: str | None) -> SyncState:
    """istioctl's rule: nothing sent, sent == acked, never acked, or stale."""
    if not sent:
        return SyncState.NOT_SENT
    if sent == acked:
        return SyncState.SYNCED
    if not acked:
        return SyncState.NEVER_ACKNOWLEDGED
    return SyncState.STALE


@dataclass(frozen=True)
class ProxySync:
    proxy: str
    """``pod.namespace`` as istiod names it."""
    istiod: str
    proxy_type: str
    version: str | None
    states: Mapping[str, SyncState]
    nonces: Mapping[str, Mapping[str, str | None]]

    @property
    def pod_name(self) -> str:
        return self.proxy.rsplit(".", 1)[0]

    @property
    def namespace(self) -> str | None:
        return self.proxy.rsplit(".", 1)[1] if "." in self.proxy else None

    @property
    def origin(self) -> str:
        return f"Pod {self.namespace}/{self.pod_name}" if self.namespace else f"Proxy {self.proxy}"

    def types_in(self, *states: SyncState) -> list[str]:
        return [t for t, s in self.states.items() if s in states]

    @property
    def overall(self) -> SyncState:
        """One word per proxy for the summary: the worst of its xDS states that matter."""
        if self.types_in(SyncState.NEVER_ACKNOWLEDGED, SyncState.STALE):
            return SyncState.STALE
        if any(self.states.get(t) == SyncState.NOT_SENT for t in MUST_BE_SENT):
            return SyncState.NOT_SENT
        return SyncState.SYNCED


def parse_syncz(entries: Any, istiod: str) -> list[ProxySync]:
    """istiod's SyncStatus JSON array -> ProxySync; every field is optional."""
    if not isinstance(entries, list):
        raise MeshbotError(f"{SYNCZ_PATH} did not return a JSON array")
    proxies = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not entry.get("proxy"):
            continue
        states, nonces = {}, {}
        for prefix, xds in XDS_TYPES.items():
            sent, acked = entry.get(f"{prefix}_sent") or None, entry.get(f"{prefix}_acked") or None
            states[xds] = sync_state(sent, acked)
            nonces[xds] = {"sent": sent, "acked": acked}
        proxies.append(ProxySync(
            proxy=str(entry["proxy"]), istiod=istiod, proxy_type=str(entry.get("proxy_type") or "sidecar"),
            version=entry.get("istio_version") or entry.get("proxy_version") or None,
            states=states, nonces=nonces))
    return proxies


def control_plane_version(snapshot: Snapshot) -> str | None:
    """istiod's version from its image tag; None when pods disagree or none are known."""
    tags = {image_tag((container_spec(p, ISTIOD_CONTAINER) or {}).get("image"))
            for p in snapshot.of_kind("Pod", snapshot.istio_namespace) if is_istiod(p)}
    tags.discard(None)
    return tags.pop() if len(tags) == 1 else None


def _versions_differ(proxy_version: str, istiod_version: str) -> bool:
    # Compare major.minor.patch only: build suffixes (-distroless, -fips) are packaging.
    def core(version: str) -> str:
        return version.split("-", 1)[0]
    return core(proxy_version) != core(istiod_version)


@check("proxy-status", kinds=("Pod",),
       summary="xDS sync state of every proxy (istioctl proxy-status) from istiod /debug/syncz")
def proxy_status(ctx: CheckContext) -> list[Finding]:
    if ctx.endpoints is None:
        return [_skipped("no istiod endpoint configured (give --istiod-url or a cluster)")]
    targets = ctx.endpoints.istiod_targets(ctx.snapshot)
    if not targets:
        return [_skipped(f"no running istiod pods in {ctx.snapshot.istio_namespace} and no --istiod-url")]
    findings: list[Finding] = []
    proxies: list[ProxySync] = []
    for target in targets:
        name = target if isinstance(target, str) else target.qualified_name
        try:
            with ctx.endpoints.open_istiod(target) as endpoint:
                proxies.extend(parse_syncz(endpoint.get_json(SYNCZ_PATH), istiod=name))
        except MeshbotError as exc:
            findings.append(_unreachable(target, exc))
    if not proxies and findings:
        return findings
    in_scope = [p for p in proxies if ctx.in_scope(p.namespace)]
    findings.append(_summary(in_scope, istiods=len(targets)))
    findings.extend(_proxy_findings(in_scope, control_plane_version(ctx.snapshot)))
    return findings


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


def _summary(proxies: list[ProxySync], istiods: int) -> Finding:
    tally = {state: 0 for state in (SyncState.SYNCED, SyncState.STALE, SyncState.NOT_SENT)}
    for proxy in proxies:
        tally[proxy.overall] += 1
    return codes.finding("MB2000", origin="istiod /debug/syncz", synced=tally[SyncState.SYNCED],
                         stale=tally[SyncState.STALE], not_sent=tally[SyncState.NOT_SENT],
                         total=len(proxies), istiods=istiods,
                         evidence={"synced": tally[SyncState.SYNCED], "stale": tally[SyncState.STALE],
                                   "not_sent": tally[SyncState.NOT_SENT], "proxies": len(proxies)})


def _proxy_findings(proxies: Iterable[ProxySync], istiod_version: str | None) -> Iterator[Finding]:
    for proxy in sorted(proxies, key=lambda p: p.proxy):
        evidence = {"istiod": proxy.istiod, "proxy_type": proxy.proxy_type, "version": proxy.version,
                    "states": {t: str(s) for t, s in proxy.states.items()}, "nonces": proxy.nonces}
        restart = Remediation("Restart the workload so its proxy reconnects and gets a full push",
                              command=f"kubectl -n {proxy.namespace} delete pod {proxy.pod_name}")
        never = proxy.types_in(SyncState.NEVER_ACKNOWLEDGED)
        if never:
            yield codes.finding("MB2002", origin=proxy.origin, proxy=proxy.proxy, types="/".join(never),
                                evidence=evidence, remediation=Remediation(
                                    "Look for rejected config in the proxy log, then fix the offending resource",
                                    command=f"kubectl -n {proxy.namespace} logs {proxy.pod_name} -c istio-proxy "
                                            f"| grep -i rejected"))
        stale = proxy.types_in(SyncState.STALE)
        if stale:
            yield codes.finding("MB2001", origin=proxy.origin, proxy=proxy.proxy, types="/".join(stale),
                                evidence=evidence, remediation=restart)
        not_sent = [t for t in proxy.types_in(SyncState.NOT_SENT) if t in MUST_BE_SENT]
        if not_sent:
            yield codes.finding("MB2003", origin=proxy.origin, proxy=proxy.proxy, types="/".join(not_sent),
                                evidence=evidence, remediation=restart)
        if istiod_version and proxy.version and _versions_differ(proxy.version, istiod_version):
            yield codes.finding("MB2004", origin=proxy.origin, proxy=proxy.proxy, proxy_version=proxy.version,
                                istiod_version=istiod_version, evidence=evidence, remediation=restart)
