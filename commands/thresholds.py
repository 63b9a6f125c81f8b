"""Every number meshbot judges by, in one place: certificate-expiry days and the check thresholds.

The defaults live here only; settings, the CLI, reminders and the Slack icons derive from them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    # Istio's own cert-expiry guidance warns 30 days ahead (istio.io/latest/docs/ops/configuration/security/
    # root-transition); 7 days leaves a working week to rotate, 90 a quarter to plan it.
    cert_error_days: int = 7
    cert_warning_days: int = 30
    cert_info_days: int = 90
    restart_warning: int = 3
    memory_near_limit_ratio: float = 0.9
    envoy_memory_warning_mb: int = 300
    envoy_memory_error_mb: int = 500
    upstream_503_share: float = 0.10
    retry_share: float = 0.20
    min_requests: int = 20
    """Clusters with fewer requests are too quiet for a share to mean anything."""
    min_flag_failures: int = 5
    """Fewer failures of one response flag (UH, UF, NR, a 403 …) since Envoy started are noise, not an outage:
    Envoy's counters only grow, and a rollout or one bad deploy leaves a few behind on every sidecar."""
    flag_share: float = 0.05
    """...and so is a flag below this share of what it could have hit (a cluster's requests or connections, a
    listener's requests): a long-lived sidecar collects some UF and UC from every upstream rollout."""
    stats_count_warning: int = 50_000
    ca_sign_error_share: float = 0.10
    """Share of CSRs istiod's CA failed to sign (since it started) that is an outage, not a blip: every signing
    error is the CA's own (the CSR parsed and the caller authenticated: security/pkg/server/ca/server.go)."""

    @property
    def cert_days(self) -> tuple[int, int, int]:
        """(error, warning, notice) days, as ``--cert-days`` takes them."""
        return (self.cert_error_days, self.cert_warning_days, self.cert_info_days)

    @property
    def reminder_days(self) -> tuple[int, ...]:
        """The days before expiry at which reminders are posted, furthest first."""
        return (self.cert_info_days, self.cert_warning_days, self.cert_error_days)


DEFAULT_THRESHOLDS = Thresholds()
CERT_DAYS_TEXT = ",".join(str(d) for d in DEFAULT_THRESHOLDS.cert_days)
"""``7,30,90``: the CLI's default and its help text."""
REMINDER_DAYS_TEXT = ",".join(str(d) for d in DEFAULT_THRESHOLDS.reminder_days)
