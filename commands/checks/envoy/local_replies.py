"""Requests the sidecar answers itself before any upstream: local rate limiting (RL, 429) and fault injection (FI, DI).

Neither reaches a cluster, so no upstream counter moves and ``upstream_rq_total`` stays flat; without these counters a
sidecar refusing most calls reads as healthy traffic.  Counter meanings: envoyproxy/envoy docs/root/configuration/
http/http_filters/local_rate_limit_filter.rst (``rate_limited``, ``ok``) and fault_filter.rst (``aborts_injected``,
``delays_injected``).  Each finding takes its cause and first step from ``flags.FAILURE_MODES``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from commands import codes
from commands.checks.envoy.failures import significant
from commands.checks.envoy.flags import FAILURE_MODES
from commands.checks.envoy.names import listener_port
from commands.checks.envoy.stats import EnvoyStats
from commands.findings import Finding
from commands.resources.references import PodRef
from commands.thresholds import Thresholds


def local_reply_findings(target: PodRef, stats: EnvoyStats, thresholds: Thresholds) -> Iterator[Finding]:
    for limiter, counts in sorted(stats.rate_limits.items()):
        limited, total = counts.get("rate_limited", 0), counts.get("rate_limited", 0) + counts.get("ok", 0)
        if significant(limited, total, thresholds):
            yield _finding(target, "MB4030", "token-bucket", port="", count=limited, total=total, limiter=limiter,
                           evidence={f"{limiter} rate_limited": limited, f"{limiter} ok": counts.get("ok", 0)})
    for prefix, manager in sorted(stats.connection_managers.items()):
        where = listener_port(prefix)
        requests = manager["downstream_rq_total"]
        for counter, what in (("fault.aborts_injected", "aborted"), ("fault.delays_injected", "delayed")):
            if significant(manager[counter], requests, thresholds):
                yield _finding(target, "MB4031", "virtualservice-fault", port=where.rpartition(" ")[2],
                               count=manager[counter], total=requests, listener=where, what=what,
                               evidence={f"{where} {counter}": manager[counter],
                                         f"{where} downstream_rq_total": requests})


def local_replies_seen(stats: EnvoyStats) -> bool:
    """Traffic the sidecar answered itself (rate limited or let through by a local limit)."""
    return any(sum(counts.values()) for counts in stats.rate_limits.values())


def _finding(target: PodRef, code: str, cause: str, *, evidence: Mapping[str, Any], port: str,
             **fields: Any) -> Finding:
    chosen = FAILURE_MODES[code].cause(cause)
    return codes.finding(code, origin=f"Pod {target}", pod=str(target), cause=chosen.state,
                         evidence={"cause": cause, **evidence},
                         remediation=chosen.remediation(pod=target.name, namespace=target.namespace,
                                                        listener_port=port), **fields)
