"""How a mesh request fails, organised by Envoy's response flags: the table the envoy check follows.

One ``FailureMode`` per flag an SRE meets in an outage: the Envoy evidence that shows it, the configuration or
control-plane states that cause it (each with how to tell it apart and a safe first step), the meshbot code
that reports it and the real-Envoy capture that proves the check reads it.  docs/response-flags.md is generated
from ``FAILURE_MODES`` (``scripts/response_flags_doc.py``) and a test keeps it fresh.  Data only: long by nature.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from commands.findings import Remediation

ENVOY = "https://www.envoyproxy.io/docs/envoy/latest/"
FLAGS_DOC = ENVOY + "configuration/observability/access_log/usage#config-access-log-format-response-flags"
CLUSTER_STATS = ENVOY + "configuration/upstream/cluster_manager/cluster_stats"
ADMIN_CLUSTERS = ENVOY + "operations/admin#get--clusters"
RBAC_DOC = ENVOY + "configuration/http/http_filters/rbac_filter"
ROUTER_DOC = ENVOY + "configuration/http/http_filters/router_filter"
TLS_STATS = ENVOY + "configuration/listeners/stats#tls-statistics"
XDS_STATS = ENVOY + "configuration/overview/mgmt_server#xds-subscription-statistics"
ISTIO = "istio/istio "

STATS, CLUSTERS, CONFIG_DUMP = "/stats", "/clusters?format=json", "/config_dump"


@dataclass(frozen=True)
class Evidence:
    endpoint: str
    """The admin path it is read from."""
    what: str
    istio_default: bool
    """True when a sidecar with Istio's default stats matcher exposes it (/clusters always does)."""


@dataclass(frozen=True)
class Cause:
    key: str
    state: str
    """The configuration or control-plane state that produces the flag."""
    tell_apart: str
    """What in the evidence says it is this cause and not another."""
    first_step: str
    command: str
    """``str.format`` template: ``{pod}``, ``{namespace}``, ``{filter}`` (istioctl's --fqdn/--port),
    ``{svc_namespace}``, ``{svc_name}``, ``{port}``, ``{listener_port}``."""

    def remediation(self, **fields: Any) -> Remediation:
        return Remediation(self.first_step, command=self.command.format(**fields))


@dataclass(frozen=True)
class FailureMode:
    flag: str
    """Envoy's response flag, or ``-`` when Envoy sets none (an RBAC 403, a direct 502)."""
    title: str
    status: str
    envoy_meaning: str
    code: str
    """The meshbot code that reports it (docs/codes.md)."""
    evidence: tuple[Evidence, ...]
    causes: tuple[Cause, ...]
    captures: tuple[str, ...]
    """tests/data/envoy-<case> directories captured from the real Envoy that show this failure."""
    sources: tuple[str, ...]

    def cause(self, key: str) -> Cause:
        return next(c for c in self.causes if c.key == key)


class FailureModel:
    """The failure modes in table order; everything that lists them (docs, tests) asks this object."""

    def __init__(self, modes: Iterable[FailureMode]):
        self._modes: dict[str, FailureMode] = {}
        for mode in modes:
            if mode.code in self._modes:
                raise ValueError(f"{mode.code} is described twice")
            self._modes[mode.code] = mode

    def __iter__(self) -> Iterator[FailureMode]:
        return iter(self._modes.values())

    def __getitem__(self, code: str) -> FailureMode:
        return self._modes[code]

    def markdown(self) -> str:
        """The summary table and one section per failure mode (docs/response-flags.md)."""
        rows = ["| Flag | Status | meshbot code | Evidence | Causes | Safe first step | Capture |",
                "|---|---|---|---|---|---|---|"]
        for m in self:
            evidence = "<br>".join(f"`{e.endpoint}` {e.what}" for e in m.evidence)
            causes = "<br>".join(c.state for c in m.causes)
            steps = "<br>".join(c.first_step.split(";")[0].split(":")[0] for c in m.causes)
            captures = "<br>".join(f"`{c}`" for c in m.captures)
            rows.append(f"| {m.flag} | {m.status} | [{m.code}](codes.md#{m.code.lower()}) | {evidence} | {causes} "
                        f"| {steps} | {captures} |")
        sections = ["\n".join(rows)]
        for m in self:
            lines = [f"### {m.flag} \u2014 {m.title} ({m.code})", "", f"Envoy: {m.envoy_meaning}", "",
                     "Evidence meshbot reads:", ""]
            lines += [f"- `{e.endpoint}` {e.what}" + ("" if e.istio_default else
                                                       " (hidden by Istio's default stats matcher)")
                      for e in m.evidence]
            lines += ["", "| Cause | How to tell it apart | Safe first step |", "|---|---|---|"]
            lines += [f"| {c.state} | {c.tell_apart} | {c.first_step} (`{c.command}`) |" for c in m.causes]
            lines += ["", "Sources: " + "; ".join(m.sources), ""]
            sections.append("\n".join(lines))
        return "\n\n".join(sections).rstrip() + "\n"


_PC_ENDPOINT = "istioctl proxy-config endpoint {pod} -n {namespace}{filter}"
_PC_CLUSTER = "istioctl proxy-config cluster {pod} -n {namespace}{filter} -o json"
_PC_ROUTE = "istioctl proxy-config route {pod} -n {namespace} --name {listener_port} -o json"
_PC_SECRET = "istioctl proxy-config secret {pod} -n {namespace}"
_ENDPOINT_SLICES = "kubectl -n {svc_namespace} get endpointslices -l kubernetes.io/service-name={svc_name} -o wide"
_POD_PORTS = "kubectl -n {namespace} get pod {pod} -o jsonpath={{.spec.containers[*].ports}}"
_NOT_IN_DEFAULTS = False

FAILURE_MODES = FailureModel([
    FailureMode(
        "UO", "upstream overflow (circuit breaking)", "503", "Upstream overflow (circuit breaking) in addition to "
        "503 response code.", "MB4001",
        (Evidence(STATS, "cluster.&lt;c&gt;.upstream_rq_pending_overflow, upstream_rq_active_overflow, "
                         "upstream_cx_pool_overflow (requests refused), circuit_breakers.&lt;priority&gt;.&lt;limit&gt;_open",
                  _NOT_IN_DEFAULTS),),
        (Cause("connection-pool", "DestinationRule connectionPool limits (http1MaxPendingRequests, http2MaxRequests, "
               "maxConnections) below the load, often because the upstream slowed down",
               "an overflow counter above 0; a gauge at 1 with no overflow only means at capacity (MB4009/MB4010)",
               "Read the limits Envoy applies and raise them only if the upstream can take more; otherwise find why "
               "it is slow", _PC_CLUSTER),),
        ("envoy-uo-overflow",),
        (CLUSTER_STATS, ENVOY + "intro/arch_overview/upstream/circuit_breaking", FLAGS_DOC,
         ISTIO + "pilot/pkg/networking/core/cluster_traffic_policy.go applyConnectionPool")),
    FailureMode(
        "UH", "no healthy upstream", "503", "No healthy upstream hosts in upstream cluster in addition to 503 "
        "response code.", "MB4013",
        (Evidence(CLUSTERS, "hosts of the cluster: none, or every one with health_status.failed_outlier_check, "
                            "failed_active_health_check or eds_health_status UNHEALTHY/DRAINING", True),
         Evidence(STATS, "cluster.&lt;c&gt;.upstream_cx_none_healthy (requests that found no host), "
                         "outlier_detection.ejections_active", _NOT_IN_DEFAULTS)),
        (Cause("no-endpoints", "the Service selects no ready pod, or a DestinationRule subset's labels match no pod "
               "(IST0173)", "/clusters lists no host for the cluster",
               "Check which pods back the service and that its selector and subset labels match them",
               _ENDPOINT_SLICES),
         Cause("outlier-ejected", "every endpoint ejected by DestinationRule outlierDetection after consecutive "
               "5xx or connect failures; Istio sets panic threshold 0, so ejected hosts take no traffic",
               "failed_outlier_check on every host",
               "Fix why the endpoints failed (their own errors, UF or UT below); they return after "
               "baseEjectionTime. Do not delete outlierDetection to hide it", _PC_ENDPOINT),
         Cause("not-ready", "every endpoint not ready or terminating (EDS UNHEALTHY or DRAINING), e.g. a failing "
               "readiness probe or a rollout with no ready pod", "eds_health_status on every host",
               "Look at the backing pods' readiness", _ENDPOINT_SLICES)),
        ("envoy-uh-outlier", "envoy-uh-no-endpoints", "envoy-uh-not-ready"),
        (FLAGS_DOC, ADMIN_CLUSTERS, CLUSTER_STATS, ENVOY + "intro/arch_overview/upstream/outlier",
         ISTIO + "pilot/pkg/networking/core/cluster_traffic_policy.go (outlierDetection, HealthyPanicThreshold)",
         ISTIO + "pilot/pkg/xds/endpoints/endpoint_builder.go")),
    FailureMode(
        "UF", "upstream connection failure", "503", "Upstream connection failure in addition to 503 response code.",
        "MB4014",
        (Evidence(CLUSTERS, "per-host cx_connect_fail", True),
         Evidence(STATS, "cluster.&lt;c&gt;.upstream_cx_connect_fail, upstream_cx_connect_timeout, "
                         "upstream_rq_pending_failure_eject (requests failed for it)", _NOT_IN_DEFAULTS)),
        (Cause("refused", "nothing listens on the endpoint's port: the Service targetPort is wrong, the app is not "
               "up yet or listens on 127.0.0.1 only", "connect failures without connect timeouts or TLS errors",
               "Compare the endpoints' port with the port the container listens on", _ENDPOINT_SLICES),
         Cause("timeout", "connections never answered: a NetworkPolicy or firewall drops them, or the node is gone",
               "upstream_cx_connect_timeout grows with the failures",
               "Check NetworkPolicies on the destination namespace and that the endpoints' pods are running",
               "kubectl -n {svc_namespace} get networkpolicies"),
         Cause("app-not-listening", "on the pod's own inbound port: the application in the pod does not listen on "
               "the port its sidecar forwards to (it crashed, has not started, or uses another port)",
               "connect failures on the inbound cluster; callers see 503 UF from this pod",
               "Compare the container's ports and its logs with the port the sidecar forwards to",
               _POD_PORTS)),
        ("envoy-uf-refused", "envoy-uf-connect-timeout", "envoy-uf-app-not-listening"),
        (FLAGS_DOC, CLUSTER_STATS, ADMIN_CLUSTERS)),
    FailureMode(
        "UF", "TLS handshake or certificate verification failure", "503", "Upstream connection failure in addition "
        "to 503 response code; the handshake is part of connecting (upstream_reset_before_response_started"
        "{connection_failure,TLS_error})", "MB4015",
        (Evidence(STATS, "cluster.&lt;c&gt;.ssl.fail_verify_error, ssl.fail_verify_san, ssl.fail_verify_no_cert, "
                         "ssl.connection_error", _NOT_IN_DEFAULTS),
         Evidence(CLUSTERS, "per-host cx_connect_fail", True)),
        (Cause("untrusted-root", "the destination's certificate does not chain to a root this proxy trusts: roots "
               "differ between clusters or namespaces, or cacerts was replaced without a transition",
               "ssl.fail_verify_error",
               "Compare the ROOTCA of this proxy with the destination's; never switch to PERMISSIVE to hide it",
               _PC_SECRET),
         Cause("wrong-identity", "the destination presents another SPIFFE identity than istiod expects: pods run "
               "under an unexpected ServiceAccount, a DestinationRule subjectAltNames is wrong, or trust domains "
               "differ", "ssl.fail_verify_san",
               "Compare the service account of the destination's pods with the identities the cluster accepts",
               _PC_CLUSTER),
         Cause("handshake", "the destination does not speak Istio mTLS: no sidecar, a DestinationRule tls mode that "
               "does not match the server, or a protocol mismatch", "ssl.connection_error without verify failures",
               "Check the destination has a sidecar and what tls mode the DestinationRule sets", _PC_CLUSTER)),
        ("envoy-tls-wrong-ca", "envoy-tls-wrong-san", "envoy-tls-plaintext-peer"),
        (TLS_STATS, FLAGS_DOC, ISTIO + "pilot/pkg/networking/core/cluster_tls.go (ISTIO_MUTUAL SAN matching)")),
    FailureMode(
        "URX", "retries exhausted", "503 (the last attempt's code)", "The request was rejected because the upstream "
        "retry limit (HTTP) or maximum connect attempts (TCP) was reached.", "MB4016",
        (Evidence(STATS, "cluster.&lt;c&gt;.upstream_rq_retry_limit_exceeded, upstream_rq_retry", _NOT_IN_DEFAULTS),),
        (Cause("persistent-failure", "the upstream fails every attempt; retries (Istio's default: 2 on connect "
               "failures and retriable codes) only multiply its load",
               "the retried attempts failed the same way: look at the cluster's other flags",
               "Fix the upstream's failures; lower VirtualService retries.attempts if the load hurts it",
               _PC_ENDPOINT),),
        ("envoy-urx-retries",),
        (FLAGS_DOC, ROUTER_DOC, ISTIO + "pilot/pkg/networking/core/route/retry/retry.go (default policy)")),
    FailureMode(
        "UT", "upstream request timeout", "504", "Upstream request timeout in addition to 504 response code.",
        "MB4017",
        (Evidence(CLUSTERS, "per-host rq_timeout", True),
         Evidence(STATS, "cluster.&lt;c&gt;.upstream_rq_timeout", _NOT_IN_DEFAULTS)),
        (Cause("slow-upstream", "the upstream answers slower than the route timeout (VirtualService http.timeout; "
               "Istio sets none by default), or a per-try timeout is shorter than its latency",
               "rq_timeout grows; the same hosts answer other requests",
               "Compare the route's timeout with the upstream's latency before raising it", _PC_ROUTE),),
        ("envoy-ut-timeout",),
        (FLAGS_DOC, ROUTER_DOC, ADMIN_CLUSTERS)),
    FailureMode(
        "UC", "upstream connection termination", "503", "Upstream connection termination in addition to 503 "
        "response code.", "MB4018",
        (Evidence(STATS, "cluster.&lt;c&gt;.upstream_cx_destroy_remote_with_active_rq", _NOT_IN_DEFAULTS),),
        (Cause("upstream-closed", "the upstream closed the connection mid-request: it crashed or restarted, or it "
               "closes idle keep-alive connections sooner than Envoy reuses them",
               "destroy_remote_with_active_rq grows; restarts of the destination pods",
               "Check the destination pods' restarts and its idle timeout against DestinationRule "
               "connectionPool.http.idleTimeout", _ENDPOINT_SLICES),
         Cause("app-closed", "on the pod's own inbound port: the application closed connections with requests in "
               "flight (it crashed or restarted, or closes keep-alive connections early)",
               "destroy_remote_with_active_rq on the inbound cluster",
               "Check the app container's restarts and logs", _POD_PORTS)),
        ("envoy-uc-reset",),
        (FLAGS_DOC, CLUSTER_STATS)),
    FailureMode(
        "DC", "downstream connection termination", "0 (no response)", "Downstream connection termination.",
        "MB4019",
        (Evidence(CLUSTERS, "per-host rq_total above rq_success + rq_error + rq_active (requests nobody waited "
                            "for)", True),),
        (Cause("caller-gave-up", "the caller closed the request before the answer: its own timeout is shorter than "
               "the upstream's latency, or it was killed; or, where an idle timeout was set on the sidecar, the "
               "sidecar ended the stream itself (SI, MB4032 once downstream_rq_idle_timeout is exported)",
               "no upstream error; the attempts simply end",
               "Compare the caller's client timeout with the upstream's latency", _PC_ROUTE),),
        ("envoy-dc-caller-gone",),
        (FLAGS_DOC, ADMIN_CLUSTERS)),
    FailureMode(
        "NR", "no route", "404", "No route configured for a given request in addition to 404 response code, or no "
        "matching filter chain for a downstream connection.", "MB4020",
        (Evidence(STATS, "http.&lt;listener&gt;.no_route", _NOT_IN_DEFAULTS),),
        (Cause("no-virtual-host", "the Host the caller used matches no Service, ServiceEntry or VirtualService "
               "host on that port, or a Sidecar's egress hosts leave it out",
               "no_route grows on the caller's outbound port",
               "List the hosts this port routes and compare them with the Host the caller sends", _PC_ROUTE),),
        ("envoy-nr-no-route",),
        (FLAGS_DOC, ROUTER_DOC, ISTIO + "pilot/pkg/networking/core/httproute.go")),
    FailureMode(
        "NC", "no cluster", "503", "Upstream cluster not found.", "MB4021",
        (Evidence(STATS, "http.&lt;listener&gt;.no_cluster", _NOT_IN_DEFAULTS),),
        (Cause("missing-subset", "a VirtualService routes to a subset no DestinationRule defines (IST0101) or to a "
               "host outside the Sidecar's egress", "no_cluster grows on the caller's outbound port",
               "Run istio's analyzers on the namespace and fix the route's destination", "istioctl analyze -n {namespace}"),),
        ("envoy-nc-no-cluster",),
        (FLAGS_DOC, ROUTER_DOC)),
    FailureMode(
        "-", "denied by RBAC (AuthorizationPolicy)", "403", "RBAC filter: \"RBAC: access denied\", response code "
        "details rbac_access_denied_matched_policy[...]; no response flag.", "MB4022",
        (Evidence(STATS, "http.&lt;inbound listener&gt;.rbac.denied, tcp.rbac.denied; shadow_denied is a dry run "
                         "and not an outage", True),),
        (Cause("policy-denies", "an AuthorizationPolicy denies the caller: an ALLOW policy it does not match, a DENY "
               "policy it matches, or principals that need mTLS the caller lacks",
               "rbac.denied grows on this pod's inbound port (shadow_denied alone is istio.io/dry-run)",
               "Find which policy decides for this pod and test it with the caller's identity; never switch to "
               "PERMISSIVE or restart for a 403", "istioctl x authz check {pod} -n {namespace}"),),
        ("envoy-rbac-denied",),
        (RBAC_DOC, ISTIO + "pilot/pkg/security/authz/builder/builder.go (shadow rules, istio_dry_run_ prefixes)")),
    FailureMode(
        "UAEX", "denied by the external authorizer (CUSTOM AuthorizationPolicy)", "403 (statusOnError when it "
        "fails)", "The request was denied by the external authorization service.", "MB4028",
        (Evidence(STATS, "http.&lt;inbound listener&gt;.ext_authz.denied, ext_authz.error, ext_authz.ok",
                  _NOT_IN_DEFAULTS),),
        (Cause("provider-denies", "the external authorizer's own policy refuses the caller",
               "ext_authz.denied grows while ext_authz.error does not",
               "Read the authorizer's decision log for these requests; the mesh only forwards its answer",
               "kubectl -n {namespace} logs {pod} -c istio-proxy --tail=500"),
         Cause("provider-down", "the authorizer named in meshConfig.extensionProviders is unreachable or too slow, "
               "and failOpen is false, so every request it should check is denied",
               "ext_authz.error grows; connect failures to the provider's service",
               "Restore the provider's endpoints (or its timeout); do not remove the CUSTOM policy, which opens "
               "the workload", "kubectl -n istio-system get configmap istio -o jsonpath={{.data.mesh}}")),
        ("envoy-uaex-denied", "envoy-uaex-authorizer-down"),
        (ENVOY + "configuration/http/http_filters/ext_authz_filter", FLAGS_DOC,
         ISTIO + "pilot/pkg/security/authz/builder/extauthz.go (failOpen, statusOnError)")),
    FailureMode(
        "UH / -", "dropped by REGISTRY_ONLY (BlackHoleCluster)", "502 (HTTP) or closed connection (TCP)",
        "HTTP: the block_all virtual host answers 502 directly; TCP: BlackHoleCluster has no host (UH).", "MB4024",
        (Evidence(STATS, "cluster.BlackHoleCluster;.upstream_cx_none_healthy, tcp.BlackHoleCluster.downstream_cx_total",
                  _NOT_IN_DEFAULTS),
         Evidence(STATS, "http.&lt;outbound listener&gt;.rq_direct_response", _NOT_IN_DEFAULTS),
         Evidence(CONFIG_DUMP, "a block_all virtual host on that port", True)),
        (Cause("unregistered-destination", "outboundTrafficPolicy REGISTRY_ONLY and the destination has no "
               "ServiceEntry (or the Sidecar's egress hosts leave it out); with ALLOW_ANY the same calls would leave "
               "through PassthroughCluster", "BlackHoleCluster counters or direct 502s on a port with block_all",
               "Find the destination in the sidecar's access log and add a ServiceEntry for it",
               "kubectl -n {namespace} logs {pod} -c istio-proxy --tail=500"),),
        ("envoy-blackhole-tcp", "envoy-blackhole-http"),
        (ISTIO + "pilot/pkg/networking/core/listener_builder.go and httproute.go (block_all)", CLUSTER_STATS)),
    FailureMode(
        "UF / UT", "destination outside the mesh failing (PassthroughCluster)", "503 / 504 (HTTP) or closed "
        "connection (TCP)", "Upstream connection failure or timeout on the ALLOW_ANY passthrough.", "MB4029",
        (Evidence(CLUSTERS, "PassthroughCluster's hosts (one per destination address called) and their "
                            "cx_connect_fail, rq_timeout", True),
         Evidence(STATS, "cluster.PassthroughCluster;.upstream_cx_connect_fail, upstream_rq_timeout", _NOT_IN_DEFAULTS)),
        (Cause("external-unreachable", "a destination with no ServiceEntry is down or unreachable from the cluster: "
               "an egress firewall, NAT, or DNS giving the pod a wrong address",
               "the failing addresses in /clusters; meshed services are not behind this cluster",
               "Find the destination in the access log and register it with a ServiceEntry, which gives it its own "
               "cluster, stats and timeouts", "kubectl -n {namespace} logs {pod} -c istio-proxy --tail=500"),),
        ("envoy-passthrough-refused",),
        (ISTIO + "pilot/pkg/networking/core/cluster_builder.go buildDefaultPassthroughCluster (ORIGINAL_DST)",
         ADMIN_CLUSTERS, CLUSTER_STATS)),
    FailureMode(
        "(any)", "pushed configuration rejected", "stale configuration", "An xDS update Envoy rejected is NACKed; "
        "the proxy keeps serving its previous configuration.", "MB4025",
        (Evidence(STATS, "cluster_manager.cds.update_rejected, listener_manager.lds.update_rejected", True),),
        (Cause("invalid-config", "istiod pushed config Envoy refuses, usually from an EnvoyFilter (or a Sidecar, "
               "Gateway) or a proxy older than istiod", "update_rejected grows; proxy-status shows the error",
               "Read the rejection in proxy-status and fix or remove the resource that produced it",
               "istioctl proxy-status {pod}.{namespace}"),),
        ("envoy-cds-rejected", "envoy-lds-rejected"),
        (XDS_STATS, ISTIO + "pilot/pkg/xds (NACK handling)")),
    FailureMode(
        "RL", "rate limited by the sidecar's local rate limit", "429", "The request was rate-limited locally by the "
        "HTTP rate limit filter in addition to 429 response code.", "MB4030",
        (Evidence(STATS, "&lt;stat_prefix&gt;.http_local_rate_limit.rate_limited, .ok", _NOT_IN_DEFAULTS),),
        (Cause("token-bucket", "an EnvoyFilter adding envoy.filters.http.local_ratelimit whose token bucket "
               "(max_tokens, tokens_per_fill, fill_interval) is smaller than the traffic, often copied from Istio's "
               "rate limit task or set before the load grew",
               "rate_limited grows beside ok; no upstream counter moves for the refused requests",
               "Compare the EnvoyFilter's token bucket with the request rate and raise it only if the upstream can "
               "take more; removing the EnvoyFilter drops the protection it was added for",
               "istioctl proxy-config listener {pod} -n {namespace} -o json"),),
        ("envoy-rl-local-limit",),
        (ENVOY + "configuration/http/http_filters/local_rate_limit_filter", FLAGS_DOC,
         "https://istio.io/latest/docs/tasks/policy-enforcement/rate-limit/")),
    FailureMode(
        "FI / DI", "fault injection (VirtualService fault)", "the abort's httpStatus / the delay", "The request was "
        "aborted with a response code specified via fault injection (FI) or delayed (DI).", "MB4031",
        (Evidence(STATS, "http.&lt;outbound listener&gt;.fault.aborts_injected, fault.delays_injected",
                  _NOT_IN_DEFAULTS),),
        (Cause("virtualservice-fault", "a VirtualService route with fault.abort or fault.delay (a resilience test "
               "left on, or copied from Istio's fault injection task); istiod renders it as the route's fault filter "
               "config, so the sidecar answers without calling the destination",
               "aborts_injected or delays_injected grows; the destination's own metrics stay healthy",
               "Find the VirtualService with fault on this port (the traffic-policy check names it) and, once "
               "nobody is running a test, remove the fault block",
               "istioctl proxy-config route {pod} -n {namespace} --name {listener_port} -o json"),),
        ("envoy-fi-abort",),
        (ENVOY + "configuration/http/http_filters/fault_filter", FLAGS_DOC,
         ISTIO + "pilot/pkg/networking/core/route/route.go TranslateFault")),
    FailureMode(
        "SI", "stream idle timeout", "504 (request received, upstream silent) or 408 (caller still sending)",
        "Stream idle timeout in addition to 408 or 504 response code.", "MB4032",
        (Evidence(STATS, "http.&lt;listener&gt;.downstream_rq_idle_timeout", _NOT_IN_DEFAULTS),),
        (Cause("idle-timeout-set", "an idle timeout someone set on this sidecar (an EnvoyFilter patching the "
               "connection manager's stream_idle_timeout or a route's idle_timeout, or ProxyConfig "
               "connectionSettings.httpStreamIdleTimeout; Istio sets 0, off, on every connection manager and no "
               "route idle_timeout) is shorter than the quiet time of these streams: a slow upstream that sends "
               "nothing before its answer, or a long-lived gRPC stream, WebSocket or event stream quiet by design",
               "downstream_rq_idle_timeout grows on the port; upstream_rq_timeout (UT) does not; the access log "
               "shows SI with 504 when the upstream was silent",
               "Read the port's stream_idle_timeout and its routes' idle_timeout and find the EnvoyFilter or "
               "ProxyConfig that set them; raise the timeout only on the routes that carry long-lived streams (or "
               "have them send keepalive messages), and compare a slow upstream's latency before raising it",
               "istioctl proxy-config listener {pod} -n {namespace} --port {listener_port} -o json"),),
        (),
        (FLAGS_DOC, ENVOY + "configuration/http/http_conn_man/stats",
         ENVOY + "faq/configuration/timeouts (stream timeouts)",
         "envoyproxy/envoy source/common/http/conn_manager_impl.cc ActiveStream::onIdleTimeout",
         ISTIO + "pilot/pkg/networking/core/listener_builder.go buildHTTPConnectionManager (StreamIdleTimeout 0s), "
                 "connection_settings.go")),
    FailureMode(
        "RL", "rate limited by the global rate limit service", "429", "The request was rate-limited locally by the "
        "HTTP rate limit filter in addition to 429 response code (here the filter asked the global service).",
        "MB4033",
        (Evidence(STATS, "cluster.&lt;c&gt;.ratelimit[.&lt;stat_prefix&gt;].over_limit, .ok", _NOT_IN_DEFAULTS),),
        (Cause("descriptor-limit", "the rate limit service's limit for the descriptors these requests carry "
               "(requests_per_unit in its configuration) is below the traffic of every caller together: the limit "
               "is shared by all replicas and all sidecars that ask the same domain",
               "over_limit grows beside ok; no upstream counter moves for the refused requests; the local limit's "
               "http_local_rate_limit counters (MB4030) stay flat",
               "Compare the service's limit for this domain and descriptor with the total request rate and raise it "
               "only if the upstream can take more; removing the EnvoyFilter drops the protection it was added for",
               "istioctl proxy-config listener {pod} -n {namespace} -o json"),),
        (),
        (ENVOY + "configuration/http/http_filters/rate_limit_filter", FLAGS_DOC,
         ENVOY + "intro/arch_overview/other_features/global_rate_limiting",
         "https://istio.io/latest/docs/tasks/policy-enforcement/rate-limit/")),
    FailureMode(
        "RLSE", "the global rate limit service failed", "500 (status_on_error)", "The request was rejected because "
        "there was an error in rate limit service.", "MB4034",
        (Evidence(STATS, "cluster.&lt;c&gt;.ratelimit[.&lt;stat_prefix&gt;].error above .failure_mode_allowed",
                   _NOT_IN_DEFAULTS),),
        (Cause("service-unavailable", "the rate limit service is down, unreachable, or slower than the filter's "
               "timeout (20 ms when unset), and failure_mode_deny is true, so its failure refuses every request it "
               "should have judged",
               "ratelimit.error grows while failure_mode_allowed does not; connect failures or timeouts on the rate "
               "limit service's cluster",
               "Restore the rate limit service's endpoints, or its timeout against its answer time; switching "
               "failure_mode_deny off lets every request through unlimited, so decide that on purpose",
               "istioctl proxy-config endpoint {pod} -n {namespace}"),),
        (),
        (ENVOY + "configuration/http/http_filters/rate_limit_filter", FLAGS_DOC,
         ENVOY + "api-v3/extensions/filters/http/ratelimit/v3/rate_limit.proto (timeout, failure_mode_deny, "
                 "status_on_error)")),
])
