"""Envoy's text ``/stats`` read into typed counters: per cluster, per HTTP connection manager, RBAC and xDS.

Counter meanings: envoyproxy/envoy docs/root/configuration/upstream/cluster_manager/cluster_stats.rst (clusters,
circuit breakers, outlier detection), .../http/http_conn_man/stats.rst and http_filters/router_filter.rst
(``no_route``, ``no_cluster``, ``rq_direct_response``), http_filters/rbac_filter.rst (``rbac.denied``,
``shadow_denied``), overview/mgmt_server.rst (``update_rejected``) and listeners/listener_stats.rst.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from commands.checks.envoy.names import BLACKHOLE, CONTROL_PLANE_CLUSTERS, STAT_DELIMITER, ClusterName


@dataclass(frozen=True)
class Overflow:
    """An Envoy counter that grows each time a circuit breaker refused something."""

    counter: str
    limit: str
    """The Envoy threshold, and the DestinationRule connectionPool field Istio sets it from
    (istio/istio pilot/pkg/networking/core/cluster_traffic_policy.go, applyConnectionPool)."""
    rejects_requests: bool
    """True when the refused thing is a request that got a local 503 instead of an upstream answer."""


# Meanings from envoyproxy/envoy docs/root/intro/arch_overview/upstream/circuit_breaking.rst and
# cluster_stats.rst; who answers what from source/common/conn_pool/conn_pool_base.cc (newStream,
# attachStreamToClient, tryCreateNewConnection) and source/common/router/router.cc.
OVERFLOWS = (
    # No room in the pending queue (and, before Envoy 1.38, no room under max_requests): the router
    # answers 503 with response flag UO.
    Overflow("upstream_rq_pending_overflow", "max_pending_requests (http1MaxPendingRequests)", True),
    # Envoy 1.38+ counts max_requests refusals here instead of in upstream_rq_pending_overflow (runtime
    # envoy.reloadable_features.skip_pending_overflow_count_on_active_rq, default true; set to false it
    # counts both, and this check then counts those refusals twice).
    Overflow("upstream_rq_active_overflow", "max_requests (http2MaxRequests)", True),
    # No new connection pool (conn_pool_map_impl.h getPool): the router sends "no healthy upstream", a 503
    # charged to upstream_rq_503.
    Overflow("upstream_cx_pool_overflow", "max_connection_pools", True),
    # No new connection: tryCreateNewConnection counts it and the request stays queued as pending, so it
    # waits rather than fails (it fails only if the pending queue is full too, counted above).
    Overflow("upstream_cx_overflow", "max_connections (tcp.maxConnections)", False),
    # The retry is skipped and the caller gets the failed attempt's answer.
    Overflow("upstream_rq_retry_overflow", "max_retries (http.maxRetries) or the retry budget", False),
)
OVERFLOW_BY_COUNTER = {o.counter: o for o in OVERFLOWS}

# Circuit-breaker gauges (cluster.NAME.circuit_breakers.PRIORITY.GAUGE): 1 means the breaker "is at capacity
# and no longer admitting", 0 "under its concurrency limit" (cluster_stats.rst, "Circuit breakers statistics").
# At capacity is not the same as rejecting: one idle keep-alive connection under max_connections: 1 holds
# cx_open at 1 while every request still goes through. Only the *_overflow counters count refusals.
CONNECTION_BREAKERS = ("cx_open",)
REQUEST_BREAKERS = ("rq_open", "rq_pending_open", "rq_retry_open", "cx_pool_open")
BREAKERS = tuple(f"circuit_breakers.{priority}.{name}" for priority in ("default", "high")
                 for name in CONNECTION_BREAKERS + REQUEST_BREAKERS)

# What each counter shows, measured on the real Envoy 1.40 (tests/data/envoy-*/): a request that never got a
# connection is in none of upstream_rq_total's count, but in exactly one of none_healthy (UH), pending_failure_eject
# (UF, TLS) or an overflow (UO); upstream_rq_completed and upstream_rq_5xx count final answers, local ones too.
CLUSTER_COUNTERS = (
    "upstream_rq_total", "upstream_rq_completed", "upstream_rq_5xx", "upstream_rq_503", "upstream_rq_retry",
    "upstream_rq_retry_limit_exceeded", "upstream_rq_timeout", "upstream_rq_pending_failure_eject",
    "upstream_cx_none_healthy", "upstream_cx_connect_fail", "upstream_cx_connect_timeout",
    "upstream_cx_destroy_remote_with_active_rq", "upstream_cx_total", "outlier_detection.ejections_active",
    "ssl.connection_error", "ssl.fail_verify_error", "ssl.fail_verify_san", "ssl.fail_verify_no_cert",
    "ssl.fail_verify_cert_hash",
    *(o.counter for o in OVERFLOWS), *BREAKERS, *(f"ratelimit.{c}" for c in ("ok", "over_limit", "error",
                                                                             "failure_mode_allowed")),
)
# ratelimit.* are the global rate limit filter's (envoy.filters.http.ratelimit), counted per route target cluster:
# "The rate limit filter outputs statistics in the cluster.<route target cluster>.ratelimit. namespace"
# (http_filters/rate_limit_filter.rst), as Istio's rate limit task configures it (istio.io/latest/docs/tasks/
# policy-enforcement/rate-limit/).  A filter with a stat_prefix of its own counts under
# ``cluster.<c>.ratelimit.<stat_prefix>.`` (measured on the real Envoy 1.40): read as the same counters, summed over
# the filters.
# ext_authz.* are the CUSTOM AuthorizationPolicy filter's (http_filters/ext_authz_filter.rst; istiod sets no stat
# prefix of its own, pilot/pkg/security/authz/builder/extauthz.go).
# fault.* are the fault filter's, which istiod puts before the router on outbound routes and configures per route
# from a VirtualService fault (pilot/pkg/networking/core/route/route.go TranslateFault; http_filters/fault_filter.rst).
# downstream_rq_idle_timeout counts streams the connection manager ended for being idle (SI; http_conn_man/stats.rst):
# its stream_idle_timeout or a route's idle_timeout (commands/checks/envoy/idle_timeouts.py).
HTTP_COUNTERS = ("downstream_rq_total", "no_route", "no_cluster", "rq_direct_response", "ext_authz.ok",
                 "ext_authz.denied", "ext_authz.error", "fault.aborts_injected", "fault.delays_injected",
                 "downstream_rq_idle_timeout")
# The local rate limit filter counts under its own stat prefix, rooted at the top (``<stat_prefix>.http_local_rate_limit.
# rate_limited``, http_filters/local_rate_limit_filter.rst); Istio's rate limit task names it http_local_rate_limiter
# (istio.io/latest/docs/tasks/policy-enforcement/rate-limit/), but an EnvoyFilter may choose any prefix.
GLOBAL_RATE_LIMIT = "ratelimit."
LOCAL_RATE_LIMIT = ".http_local_rate_limit."
LOCAL_RATE_LIMIT_COUNTERS = ("ok", "rate_limited")
XDS_REJECTIONS = {"cluster_manager.cds.update_rejected": "clusters (CDS)",
                  "listener_manager.lds.update_rejected": "listeners (LDS)"}
_CLUSTER_SUFFIXES = tuple(f".{c}" for c in CLUSTER_COUNTERS)
_HTTP_SUFFIXES = tuple(f".{c}" for c in HTTP_COUNTERS)
_ACTIVE_CLUSTERS = "cluster_manager.active_clusters"
_RBAC = ".rbac."
ISTIO_EXT_AUTHZ_SHADOW_PREFIX = "istio_ext_authz_"
_ENVOY_OWN_MANAGERS = frozenset({"admin", "async-client"})
"""Envoy's admin listener and its internal client: the check's own reads are not the mesh's traffic."""
# tcp_proxy to BlackHoleCluster (REGISTRY_ONLY's virtual outbound chain) has stat prefix BlackHoleCluster
# (istio/istio pilot/pkg/networking/core/listener_builder.go); every connection it takes is dropped.
_BLACKHOLE_TCP = f"tcp.{BLACKHOLE}.downstream_cx_total"

STATS_INCLUSION_REGEX = (
    r"cluster\.(outbound\|.*|inbound\|.*|BlackHoleCluster;|PassthroughCluster;)\.(upstream_(rq_(total|completed|5xx|503|retry|retry_limit_exceeded"
    r"|timeout|pending_failure_eject)|cx_(none_healthy|connect_fail|connect_timeout|destroy_remote_with_active_rq"
    r"|total))|upstream_(rq_pending|rq_active|cx|cx_pool|rq_retry)_overflow|circuit_breakers\.(default|high)\.\w+_open"
    r"|outlier_detection\.ejections_active|ssl\.(connection_error|fail_verify_\w+)"
    r"|ratelimit\.([\w-]+\.)*(ok|over_limit|error|failure_mode_allowed))"
    r"|http\.outbound_.*\.(downstream_rq_total|no_route|no_cluster|rq_direct_response|fault\.(aborts|delays)_injected"
    r"|downstream_rq_idle_timeout)"
    r"|http\.inbound_.*\.(downstream_rq_total|ext_authz\.(ok|denied|error)|downstream_rq_idle_timeout)"
    r"|tcp\.BlackHoleCluster\.downstream_cx_total|.*\.http_local_rate_limit\.(ok|rate_limited)")
"""A proxyStatsMatcher inclusion regex that exports exactly the stats this check reads on top of Istio's defaults
(Envoy matches it against the whole stat name); tests prove it against the real binary."""


@dataclass(frozen=True)
class ClusterStats:
    name: str
    """The cluster's name, without Istio's ``;`` stat delimiter."""
    counters: Mapping[str, int] = field(default_factory=dict)

    def __getitem__(self, counter: str) -> int:
        return self.counters.get(counter, 0)

    @property
    def cluster(self) -> ClusterName:
        return ClusterName.parse(self.name)

    @property
    def host(self) -> str | None:
        return self.cluster.host or None

    @property
    def total(self) -> int:
        return self["upstream_rq_total"]

    @property
    def errors_503(self) -> int:
        return self["upstream_rq_503"]

    @property
    def errors_5xx(self) -> int:
        """Final answers with a 5xx, local ones (no healthy upstream, connect failure, overflow) included."""
        return max(self["upstream_rq_5xx"], self.errors_503)

    @property
    def retries(self) -> int:
        return self["upstream_rq_retry"]

    @property
    def open_breakers(self) -> tuple[str, ...]:
        """``default.rq_open``, ``high.cx_open``: breakers whose gauge reads 1 (at capacity)."""
        return tuple(b.removeprefix("circuit_breakers.") for b in BREAKERS if self[b] == 1)

    @property
    def overflows(self) -> tuple[tuple[str, int], ...]:
        """``(counter, count)`` for each ``*_overflow`` counter above 0, in ``OVERFLOWS`` order."""
        return tuple((o.counter, self[o.counter]) for o in OVERFLOWS if self[o.counter] > 0)

    def overflow(self, counter: str) -> int:
        return self[counter]

    def open_breakers_among(self, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(b for b in self.open_breakers if b.partition(".")[2] in names)

    @property
    def rejected(self) -> int:
        """Requests a circuit breaker refused with a local 503; none of them is in upstream_rq_total."""
        return sum(count for counter, count in self.overflows if OVERFLOW_BY_COUNTER[counter].rejects_requests)

    @property
    def never_connected(self) -> int:
        """Attempts that never got a connection: no healthy host (UH), a failed connect or handshake (UF) and
        circuit-breaker refusals (UO).  upstream_rq_total leaves every one of them out."""
        return self["upstream_cx_none_healthy"] + self["upstream_rq_pending_failure_eject"] + self.rejected

    @property
    def requests(self) -> int:
        """Requests as callers see them: attempts that reached the upstream, plus attempts that never got a
        connection, minus retries (each retry is an attempt of a request already counted)."""
        return max(self.total + self.never_connected - self.retries, 0)


@dataclass(frozen=True)
class ConnectionManagerStats:
    """One HTTP connection manager (an Istio listener port), keyed by its stat prefix."""

    prefix: str
    counters: Mapping[str, int] = field(default_factory=dict)

    def __getitem__(self, counter: str) -> int:
        return self.counters.get(counter, 0)


@dataclass(frozen=True)
class RbacStats:
    """An RBAC filter's counters; ``scope`` is ``http.<listener prefix>`` or ``tcp`` (Istio's network RBAC)."""

    scope: str
    denied: int = 0
    allowed: int = 0
    shadow_denied: int = 0
    """Denials a dry-run (istio.io/dry-run) policy would have made: logged, never enforced."""


@dataclass(frozen=True)
class EnvoyStats:
    clusters: Mapping[str, ClusterStats]
    count: int
    """How many stats Envoy exports (one per line of /stats)."""
    active_clusters: int | None = None
    """``cluster_manager.active_clusters``: how many clusters Envoy has, exported or not."""
    connection_managers: Mapping[str, ConnectionManagerStats] = field(default_factory=dict)
    rbac: tuple[RbacStats, ...] = ()
    xds_rejected: Mapping[str, int] = field(default_factory=dict)
    """``clusters (CDS)`` / ``listeners (LDS)`` -> updates Envoy rejected (exported under Istio's defaults)."""
    blackhole_tcp_connections: int = 0
    rate_limits: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Local rate limit filters by stat prefix -> ``ok`` / ``rate_limited`` counts (RL)."""

    @property
    def service_clusters(self) -> list[ClusterStats]:
        return [c for c in self.clusters.values() if c.cluster.is_service]

    @property
    def hidden_service_clusters(self) -> int:
        """How many clusters Envoy has whose per-cluster stats it does not export, when it exports none
        for any service cluster (Istio's default stats matcher); 0 when the stats are there or unknown."""
        if self.active_clusters is None or any(n not in CONTROL_PLANE_CLUSTERS for n in self.clusters):
            return 0
        return max(self.active_clusters - len(self.clusters), 0)


def parse_stats(text: str) -> EnvoyStats:
    """Envoy's text ``/stats`` (``name: value`` lines) -> the counters the check uses."""
    clusters: dict[str, dict[str, int]] = defaultdict(dict)
    managers: dict[str, dict[str, int]] = defaultdict(dict)
    rbac: dict[str, dict[str, int]] = defaultdict(dict)
    xds: dict[str, int] = {}
    active_clusters: int | None = None
    blackhole_tcp = 0
    rate_limits: dict[str, dict[str, int]] = defaultdict(dict)
    lines = text.splitlines()
    # A busy sidecar exports tens of thousands of lines: cheap prefix/suffix tests first, no regex.
    for line in lines:
        name, _, value = line.rpartition(": ")
        if not value.isdigit():
            continue
        number = int(value)
        if LOCAL_RATE_LIMIT in name:
            prefix, _, stat = name.rpartition(LOCAL_RATE_LIMIT)
            if stat in LOCAL_RATE_LIMIT_COUNTERS:
                rate_limits[prefix][stat] = number
        elif name.startswith("cluster."):
            if split := _split_scoped(name.removeprefix("cluster."), _CLUSTER_SUFFIXES, CLUSTER_COUNTERS):
                counters = clusters[split[0]]  # summed: rate limit filters with different stat prefixes
                counters[split[1]] = counters.get(split[1], 0) + number
        elif name.startswith(("http.", "tcp.")) and _RBAC in name:
            scope, _, stat = name.rpartition(_RBAC)
            rbac[scope.removesuffix(STAT_DELIMITER)][_rbac_key(stat)] = number
        elif name.startswith("http."):
            split = _split_scoped(name.removeprefix("http."), _HTTP_SUFFIXES, HTTP_COUNTERS)
            if split and split[0] not in _ENVOY_OWN_MANAGERS:
                managers[split[0]][split[1]] = number
        elif name in XDS_REJECTIONS:
            xds[XDS_REJECTIONS[name]] = number
        elif name == _ACTIVE_CLUSTERS:
            active_clusters = number
        elif name == _BLACKHOLE_TCP:
            blackhole_tcp = number
    return EnvoyStats(
        clusters={n: ClusterStats(n, values) for n, values in clusters.items()}, count=len(lines),
        active_clusters=active_clusters,
        connection_managers={p: ConnectionManagerStats(p, values) for p, values in managers.items()},
        rbac=tuple(RbacStats(scope, denied=v.get("denied", 0), allowed=v.get("allowed", 0),
                             shadow_denied=v.get("shadow_denied", 0)) for scope, v in rbac.items()),
        xds_rejected=xds, blackhole_tcp_connections=blackhole_tcp,
        rate_limits={p: dict(v) for p, v in rate_limits.items()})


def _split_scoped(rest: str, suffixes: tuple[str, ...], wanted: tuple[str, ...]) -> tuple[str, str] | None:
    """``NAME;.STAT`` (Istio's delimiter) or ``NAME.STAT`` -> (NAME, STAT) when STAT is wanted.

    Prefixed variants (``NAME;.external.upstream_rq_503``, ``NAME;.retry.upstream_rq_503``) are other
    counters and never count twice: with the delimiter their stat is ``external.…``; without it they
    become a scope of their own (``NAME.external``) that no cluster of the sidecar has.
    """
    if STAT_DELIMITER + "." in rest:
        scope, _, stat = rest.partition(STAT_DELIMITER + ".")
        if stat not in wanted and stat.startswith(GLOBAL_RATE_LIMIT):
            stat = GLOBAL_RATE_LIMIT + stat.rpartition(".")[2]  # ratelimit.<stat_prefix>.<counter>
        return (scope, stat) if stat in wanted else None
    if not rest.endswith(suffixes):
        return None
    stat = next(s for s in wanted if rest.endswith("." + s))
    return rest[:-len(stat) - 1], stat


def _rbac_key(stat: str) -> str:
    """``denied``, ``allowed``; Istio's dry-run rules count as ``istio_dry_run_allow_.shadow_denied`` (the shadow
    rules stat prefix of pilot/pkg/security/authz/builder/builder.go) -> ``shadow_denied``.

    CUSTOM policies use shadow rules too, prefixed ``istio_ext_authz_``, only to mark which requests go to the
    external authorizer (builder.go, extauthz.go): their shadow_denied means "not sent to it", never a dry run.
    """
    if stat.startswith(ISTIO_EXT_AUTHZ_SHADOW_PREFIX):
        return "ext_authz_selection." + stat.rpartition(".")[2]
    if stat.endswith("shadow_denied"):
        return "shadow_denied"
    if stat.endswith("shadow_allowed"):
        return "shadow_allowed"
    return stat
