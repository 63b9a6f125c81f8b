"""The ``proxy-status`` check: what ``istioctl proxy-status`` shows, from istiod's ``/debug/syncz``."""

from __future__ import annotations

import re
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
from commands.cluster.endpoints import Endpoint

SYNCZ_PATH = "/debug/syncz"
VERSION_PATH = "/version"
"""istiod's monitoring port answers its build as text, ``1.24.2-<git sha>-Clean`` (pilot/pkg/bootstrap/monitoring.go);
``istioctl version`` reads the same path (pkg/kube/client.go, setServerInfoWithIstiodVersionInfo)."""

# Type URLs and the short names istioctl prints for them (istio pkg/model/xds.go, GetShortType).
SHORT_TYPES = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": "CDS",
    "type.googleapis.com/envoy.config.listener.v3.Listener": "LDS",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "EDS",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": "RDS",
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret": "SDS",
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig": "ECDS",
    "type.googleapis.com/istio.networking.nds.v1.NameTable": "NDS",
    "type.googleapis.com/istio.mesh.v1alpha1.ProxyConfig": "PCDS",
    "type.googleapis.com/istio.workload.Address": "WDS",
    "type.googleapis.com/istio.workload.Workload": "WDS",
    "type.googleapis.com/istio.security.Authorization": "WADS",
}
# The flat ``*_sent``/``*_acked`` fields of SyncStatus (pilot/pkg/xds/debug.go), the only shape before Istio 1.23.
FLAT_TYPES = {"cluster": "CDS", "listener": "LDS", "endpoint": "EDS", "route": "RDS", "extensionconfig": "ECDS"}
# Istio 1.23 added the per-type ``resources`` map with ``lastError`` (istio/istio#51638, release note
# istioctl-ps-improvements.yaml): unsubscribed types became IGNORED and rejected config became ERROR.
RESOURCES_MAP_SINCE = (1, 23)

ZTUNNEL = "ztunnel"
"""model.Ztunnel (pkg/model/proxy.go); the other node types are sidecar, router and waypoint (all Envoy)."""
# An Envoy cannot start serving without listeners and clusters; ztunnel cannot without workloads (WDS).
MUST_BE_SENT = {"CDS", "LDS"}
ZTUNNEL_MUST_BE_SENT = {"WDS"}

MAX_ERROR_CHARS = 300
"""Envoy's NACK text can quote whole filter configs; the first lines name the resource and the reason."""


class SyncState(StrEnum):
    SYNCED = "SYNCED"
    NOT_SENT = "NOT SENT"
    STALE = "STALE"
    NEVER_ACKNOWLEDGED = "STALE (Never Acknowledged)"
    ERROR = "ERROR"
    IGNORED = "IGNORED"


def sync_state(sent: str | None, acked: str | None, last_error: str | None = None) -> SyncState:
    """istioctl's rule for one subscribed type (pilot/pkg/xds/statusgen.go debugSyncStatus).

    ``lastError`` wins: on a NACK istiod records Envoy's error_detail and leaves the acked nonce at the
    last accepted push (pkg/xds/server.go ShouldRespond), so sent != acked would otherwise read as STALE.
    An empty acked nonce is the pre-1.22 istioctl's "STALE (Never Acknowledged)" (istioctl/pkg/writer/pilot
    /status.go before istio/istio#47740): a first push still in flight, not a rejection.
    """
    if last_error:
        return SyncState.ERROR
    if not sent:
        return SyncState.NOT_SENT
    if sent == acked:
        return SyncState.SYNCED
    if not acked:
        return SyncState.NEVER_ACKNOWLEDGED
    return SyncState.STALE


_STATE_RANK = {SyncState.ERROR: 0, SyncState.STALE: 1, SyncState.NEVER_ACKNOWLEDGED: 1, SyncState.NOT_SENT: 2,
               SyncState.SYNCED: 3, SyncState.IGNORED: 4}


# -- Envoy's rejection text, made safe to show --------------------------------------------------------------

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|$)", re.S)
_SECRET_FIELD = re.compile(
    r"(?i)\b(inline_string|inline_bytes|private_key|password|passwd|token|api[_-]?key|authorization|"
    r"client_secret|hmac_secret)(\"?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|\S+)")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
_LONG_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{40,}")
REDACTED = "(redacted)"


def quote_envoy_error(text: str) -> str:
    """Envoy's NACK error_detail, one line, at most MAX_ERROR_CHARS, with key material and tokens removed.

    A rejected EnvoyFilter or Lua/Wasm config is echoed back in the error, and such configs can inline
    secrets (``inline_string``/``inline_bytes`` DataSources, bearer headers); they never reach a finding.
    """
    text = _PEM.sub(REDACTED, text)
    text = _BEARER.sub(REDACTED, text)
    text = _SECRET_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _LONG_BLOB.sub(REDACTED, text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1].rstrip() + "…"


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


# -- versions ----------------------------------------------------------------------------------------------

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


# -- one proxy's sync state --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TypeSync:
    """One subscribed xDS type of one proxy."""

    type: str
    state: SyncState
    sent: str | None = None
    acked: str | None = None
    last_error: str | None = None
    """Envoy's rejection, already passed through quote_envoy_error."""
    sent_time: str | None = None

    def evidence(self) -> dict[str, str]:
        out = {"state": str(self.state), "sent": self.sent or "", "acked": self.acked or ""}
        if self.sent_time:
            out["sent_time"] = self.sent_time
        if self.last_error:
            out["last_error"] = self.last_error
        return out


@dataclass(frozen=True)
class ProxySync:
    proxy: str
    """``pod.namespace`` as istiod names it."""
    istiod: str
    proxy_type: str
    version: str | None
    types: Mapping[str, TypeSync]
    """Subscribed types only: a type the proxy never asked for is IGNORED, as istioctl ≥ 1.23 prints it."""
    resources_map: bool = True
    """False for syncz from istiod < 1.23 (flat fields only: no lastError, no subscription list)."""
    cluster_id: str | None = None

    @property
    def pod_name(self) -> str:
        return self.proxy.rsplit(".", 1)[0]

    @property
    def namespace(self) -> str | None:
        return self.proxy.rsplit(".", 1)[1] if "." in self.proxy else None

    @property
    def origin(self) -> str:
        return f"Pod {self.namespace}/{self.pod_name}" if self.namespace else f"Proxy {self.proxy}"

    @property
    def is_ztunnel(self) -> bool:
        return self.proxy_type == ZTUNNEL

    def types_in(self, *states: SyncState) -> list[str]:
        return [t for t, s in self.types.items() if s.state in states]

    def not_sent_required(self) -> list[str]:
        """Listeners/clusters (workloads for ztunnel) istiod never sent; other types may legitimately be empty."""
        required = ZTUNNEL_MUST_BE_SENT if self.is_ztunnel else MUST_BE_SENT
        return [t for t in self.types_in(SyncState.NOT_SENT) if t in required]

    @property
    def overall(self) -> SyncState:
        """One word per proxy for the summary: the worst of its xDS states that matter."""
        if self.types_in(SyncState.ERROR):
            return SyncState.ERROR
        if self.types_in(SyncState.NEVER_ACKNOWLEDGED, SyncState.STALE):
            return SyncState.STALE
        if self.not_sent_required():
            return SyncState.NOT_SENT
        return SyncState.SYNCED

    def evidence(self, istiod: Istiod | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"istiod": self.istiod, "proxy_type": self.proxy_type, "version": self.version,
                               "syncz": "resources" if self.resources_map else "flat (istiod < 1.23)",
                               "types": {t: s.evidence() for t, s in sorted(self.types.items())}}
        if istiod is not None and istiod.version is not None:
            out["istiod_version"] = str(istiod.version)
        return out


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _worse(a: TypeSync | None, b: TypeSync) -> TypeSync:
    return b if a is None or _STATE_RANK[b.state] < _STATE_RANK[a.state] else a


def _types_from_resources(resources: Any) -> dict[str, TypeSync]:
    """The ``resources`` map (type URL -> ResourceStatus{sent, acked, sentTime, lastError}, pilot/pkg/xds/debug.go)."""
    types: dict[str, TypeSync] = {}
    if not isinstance(resources, Mapping):
        return types
    for url, status in resources.items():
        if not isinstance(status, Mapping):
            continue
        short = SHORT_TYPES.get(str(url), str(url).rsplit("/", 1)[-1])
        sent, acked = _text(status.get("sent")), _text(status.get("acked"))
        error = _text(status.get("lastError"))
        error = quote_envoy_error(error) if error else None
        sync = TypeSync(short, sync_state(sent, acked, error), sent, acked, error, _text(status.get("sentTime")))
        # WDS is two type URLs (Address and Workload); keep the worse of the two.
        types[short] = _worse(types.get(short), sync)
    return types


def _types_from_flat_fields(entry: Mapping[str, Any], proxy_type: str) -> dict[str, TypeSync]:
    types = {}
    for prefix, short in FLAT_TYPES.items():
        sent, acked = _text(entry.get(f"{prefix}_sent")), _text(entry.get(f"{prefix}_acked"))
        if not sent and proxy_type == ZTUNNEL:
            # ztunnel asks for none of these; istioctl before 1.22 printed IGNORED for it (xdsStatus).
            continue
        types[short] = TypeSync(short, sync_state(sent, acked), sent, acked)
    return types


def parse_syncz(entries: Any, istiod: str, *, resources_map: bool | None = None) -> list[ProxySync]:
    """istiod's SyncStatus JSON array -> ProxySync; every field is optional.

    ``resources_map``: whether this istiod serves the per-type ``resources`` map (1.23+).  None means decide from
    the answer: an entry whose map is empty omits it (``omitempty``), so one entry carrying it marks the istiod.
    """
    if not isinstance(entries, list):
        raise MeshbotError(f"{SYNCZ_PATH} did not return a JSON array")
    valid = [e for e in entries if isinstance(e, Mapping) and e.get("proxy")]
    if resources_map is None:
        resources_map = any("resources" in e for e in valid)
    proxies = []
    for entry in valid:
        proxy_type = str(entry.get("proxy_type") or "sidecar")
        types = (_types_from_resources(entry.get("resources")) if resources_map
                 else _types_from_flat_fields(entry, proxy_type))
        proxies.append(ProxySync(
            proxy=str(entry["proxy"]), istiod=istiod, proxy_type=proxy_type,
            # istio_version is what istiod fills (node.GetIstioVersion); proxy_version was last set before 1.3.
            version=_text(entry.get("istio_version")) or _text(entry.get("proxy_version")),
            types=types, resources_map=resources_map, cluster_id=_text(entry.get("cluster_id"))))
    return proxies


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
    istiods: dict[str, Istiod] = {}
    for target in targets:
        name = target if isinstance(target, str) else target.qualified_name
        try:
            with ctx.endpoints.open_istiod(target) as endpoint:
                entries = endpoint.get_json(SYNCZ_PATH)
                version, source, problem = istiod_version(endpoint, target, ctx.snapshot)
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
    in_scope = [p for p in proxies if ctx.in_scope(p.namespace)]
    findings.append(_summary(in_scope, istiods=len(targets)))
    for proxy in sorted(in_scope, key=lambda p: p.proxy):
        istiod = istiods.get(proxy.istiod)
        findings.extend(_sync_findings(proxy, istiod, proxy.evidence(istiod)))
        findings.extend(_version_findings(proxy, istiod, proxy.evidence(istiod)))
    findings.extend(_unknown_versions(in_scope, istiods))
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
    tally = {state: 0 for state in (SyncState.SYNCED, SyncState.STALE, SyncState.ERROR, SyncState.NOT_SENT)}
    for proxy in proxies:
        tally[proxy.overall] += 1
    return codes.finding("MB2000", origin="istiod /debug/syncz", synced=tally[SyncState.SYNCED],
                         stale=tally[SyncState.STALE], error=tally[SyncState.ERROR],
                         not_sent=tally[SyncState.NOT_SENT], total=len(proxies), istiods=istiods,
                         evidence={"synced": tally[SyncState.SYNCED], "stale": tally[SyncState.STALE],
                                   "error": tally[SyncState.ERROR], "not_sent": tally[SyncState.NOT_SENT],
                                   "proxies": len(proxies)})


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
    args = dict(origin=proxy.origin, proxy=proxy.proxy, proxy_version=proxy.version, istiod=istiod.name,
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
