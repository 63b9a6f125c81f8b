"""Istio's standard metric and label names, and the PromQL meshbot builds from them.

Names and labels: https://istio.io/latest/docs/reference/config/metrics/ ("Istio Standard Metrics"),
emitted by the proxy's stats filter (istio/proxy source/extensions/filters/http/istio_stats/istio_stats.cc).
``reporter`` is ``source`` for the client's proxy and ``destination`` for the server's (``waypoint`` for an
ambient waypoint), so a request between two sidecars is counted twice.  istiod's own metrics come from
pilot/pkg/xds/monitoring.go (``pilot_xds_pushes``, ``pilot_total_xds_rejects``,
``pilot_proxy_convergence_time``) and security/pkg/server/ca/monitoring.go (``citadel_server_*``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

REQUESTS = "istio_requests_total"
TCP_CLOSED = "istio_tcp_connections_closed_total"
TCP_OPENED = "istio_tcp_connections_opened_total"

REPORTER = "reporter"
SOURCE_WORKLOAD = "source_workload"
SOURCE_NAMESPACE = "source_workload_namespace"
DESTINATION_WORKLOAD = "destination_workload"
DESTINATION_NAMESPACE = "destination_workload_namespace"
DESTINATION_SERVICE = "destination_service_name"
RESPONSE_CODE = "response_code"
RESPONSE_FLAGS = "response_flags"
SECURITY_POLICY = "connection_security_policy"

EDGE_LABELS = (REPORTER, SOURCE_WORKLOAD, SOURCE_NAMESPACE, DESTINATION_WORKLOAD, DESTINATION_NAMESPACE,
               DESTINATION_SERVICE)
FAILURE_LABELS = (*EDGE_LABELS, RESPONSE_CODE, RESPONSE_FLAGS, SECURITY_POLICY)

# What counts as a failed request: 5xx; 0, which Envoy reports when no response was sent (the downstream
# reset or the connection failed, envoyproxy/envoy docs access_log usage %RESPONSE_CODE%); and the 4xx the
# mesh itself answers: 401 (RequestAuthentication/JWT), 403 (RBAC: access denied, AuthorizationPolicy) and
# 429 (rate limit, response flag RL).  Other 4xx (404, 400) are usually the application's own answer.
ERROR_CODES = "5..|0|401|403|429"

# istiod's trends (pilot/pkg/xds/monitoring.go, security/pkg/server/ca/monitoring.go); memory from the
# kubelet's cAdvisor (container "discovery" is istiod's container in Istio's charts) or istiod's own
# Go process collector.
ISTIOD_CONTAINER = "discovery"
PUSHES = "pilot_xds_pushes"
REJECTS = "pilot_total_xds_rejects"
CONVERGENCE_BUCKET = "pilot_proxy_convergence_time_bucket"
CSR_SIGN_ERRORS = "citadel_server_csr_sign_err_count"
WORKING_SET = "container_memory_working_set_bytes"
RESIDENT_MEMORY = "process_resident_memory_bytes"


def quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def alternatives(values: Iterable[str]) -> str:
    """``a|b|c`` for a ``=~`` matcher, regex characters escaped (RE2, fully anchored by Prometheus)."""
    escaped = sorted({"".join("\\" + c if c in r".^$*+?()[]{}|\\" else c for c in v) for v in values})
    return "|".join(escaped)


def selector(metric: str, *matchers: str) -> str:
    return f"{metric}{{{','.join(m for m in matchers if m)}}}"


def in_namespaces(label: str, namespaces: Sequence[str]) -> str:
    return f"{label}=~{quote(alternatives(namespaces))}" if namespaces else ""


SCOPE = "__SCOPE__"
"""Where ``scoped`` puts the namespace matcher inside a selector built with ``selector``."""


def scoped(expression: str, namespaces: Sequence[str]) -> list[str]:
    """``expression`` (with ``SCOPE`` among a selector's matchers) once per side of an edge, or once unscoped.

    An edge is in scope when either end is in one of ``namespaces``; PromQL cannot OR two labels in one
    selector, so the caller joins the two with ``or`` (which keeps one copy of identical label sets).
    """
    if not namespaces:
        return [expression.replace("," + SCOPE, "").replace(SCOPE + ",", "").replace(SCOPE, "")]
    return [expression.replace(SCOPE, in_namespaces(label, namespaces))
            for label in (SOURCE_NAMESPACE, DESTINATION_NAMESPACE)]


def by(labels: Sequence[str]) -> str:
    return f"by ({', '.join(labels)})"
