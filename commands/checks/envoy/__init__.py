"""The ``envoy`` check as a package: one module per concept.

``names`` (Istio cluster names -> services), ``stats`` (/stats), ``hosts`` (/clusters), ``flags`` (the
response-flag table), ``breakers`` (UO), ``failures`` (UH, UF, TLS, URX, UT, UC, DC, 5xx share), ``listeners``
(NR, NC, RBAC, REGISTRY_ONLY, rejected xDS), ``local_replies`` (local RL, FI/DI), ``global_rate_limit`` (RL, RLSE),
``idle_timeouts`` (SI) and ``check`` (reading a sidecar and what could not be checked).
"""

from commands.checks.envoy.check import admin_unreachable, envoy, memory_bytes
from commands.checks.envoy.stats import STATS_INCLUSION_REGEX, parse_stats

__all__ = ["STATS_INCLUSION_REGEX", "admin_unreachable", "envoy", "memory_bytes", "parse_stats"]
