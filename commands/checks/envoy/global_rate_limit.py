"""The global rate limit service's answers as one sidecar saw them: over the limit (RL, 429) or no answer (RLSE, 500).

Global rate limiting is ``envoy.filters.http.ratelimit`` asking a gRPC rate limit service before the router (Istio's
rate limit task adds it with an EnvoyFilter, failure_mode_deny true: istio.io/latest/docs/tasks/policy-enforcement/
rate-limit/).  Local rate limiting (``http_local_rate_limit``, MB4030) never calls out and is read elsewhere.  Per
route target cluster the filter counts (envoyproxy/envoy docs/root/configuration/http/http_filters/
rate_limit_filter.rst, "Statistics"):

- ``ratelimit.ok`` / ``ratelimit.over_limit``: the service's under/over limit answers; over limit is a 429 with RL;
- ``ratelimit.error``: no usable answer (service down, or slower than the filter's ``timeout``, 20 ms when unset:
  api-v3 extensions/filters/http/ratelimit/v3/rate_limit.proto);
- ``ratelimit.failure_mode_allowed``: errors let through because ``failure_mode_deny`` is false.  With it true
  the request is answered ``status_on_error`` (500 by default) with flag RLSE, so RLSE = error - failure_mode_allowed.

Measured on the real Envoy 1.40 (tests/test_outage_global_rate_limit.py): a service answering OVER_LIMIT gives 429
and ``over_limit``; an unreachable one gives 500 and ``error`` under failure_mode_deny, 200 and
``failure_mode_allowed`` without it.
"""

from __future__ import annotations

from collections.abc import Iterator

from commands import codes
from commands.checks.envoy.failures import significant
from commands.checks.envoy.flags import FAILURE_MODES
from commands.checks.envoy.stats import ClusterStats
from commands.findings import Finding, Remediation
from commands.resources.references import PodRef
from commands.thresholds import Thresholds

OK, OVER_LIMIT, ERROR, ALLOWED = ("ratelimit.ok", "ratelimit.over_limit", "ratelimit.error",
                                  "ratelimit.failure_mode_allowed")


def global_rate_limit_findings(target: PodRef, stats: ClusterStats, thresholds: Thresholds) -> Iterator[Finding]:
    """MB4033 (refused over the limit), MB4034 (refused because the service failed), MB4035 (let through unchecked)."""
    asked = stats[OK] + stats[OVER_LIMIT] + stats[ERROR]
    if not asked:
        return
    service, origin = stats.cluster.service, f"Pod {target}"
    evidence = {counter: stats[counter] for counter in (OK, OVER_LIMIT, ERROR, ALLOWED)}
    fields = {"pod": target.name, "namespace": target.namespace, "listener_port": ""}
    if significant(stats[OVER_LIMIT], asked, thresholds):
        chosen = FAILURE_MODES["MB4033"].cause("descriptor-limit")
        yield codes.finding("MB4033", origin=origin, pod=str(target), count=stats[OVER_LIMIT], total=asked,
                            service=service, cause=chosen.state, evidence={"cause": chosen.key, **evidence},
                            remediation=chosen.remediation(**fields))
    # Each error is either let through (failure_mode_allowed) or refused with RLSE; never both.
    refused = max(stats[ERROR] - stats[ALLOWED], 0)
    if significant(refused, asked, thresholds):
        chosen = FAILURE_MODES["MB4034"].cause("service-unavailable")
        yield codes.finding("MB4034", origin=origin, pod=str(target), count=refused, total=asked, service=service,
                            cause=chosen.state, evidence={"cause": chosen.key, **evidence},
                            remediation=chosen.remediation(**fields))
    if significant(stats[ALLOWED], asked, thresholds):
        yield codes.finding(
            "MB4035", origin=origin, pod=str(target), count=stats[ALLOWED], total=asked, service=service,
            evidence=evidence, remediation=Remediation(
                # failure_mode_deny false is a choice to serve unlimited rather than fail; the service is what broke.
                "Restore the rate limit service (its pods, and its answer time against the filter's timeout); "
                "until then these requests are not limited at all",
                command=f"istioctl proxy-config listener {target.name} -n {target.namespace} -o json"))
