"""istiod's ``/debug/syncz`` answer as typed objects: each proxy's per-xDS-type sync state, as istioctl
proxy-status computes it, with Envoy's rejection text made safe to show."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from commands.checks.versions import Istiod
from commands.errors import MeshbotError
from commands.times import parse_rfc3339

SYNCZ_PATH = "/debug/syncz"

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

    @property
    def last_sent(self) -> datetime | None:
        """When istiod last pushed this proxy anything (the ``sentTime`` of 1.23+ syncz); None when it does not say."""
        times = []
        for sync in self.types.values():
            if not sync.sent_time:
                continue
            try:
                times.append(parse_rfc3339(sync.sent_time))
            except ValueError:
                continue
        return max(times, default=None)

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
