"""The CA expiry istiod itself reports on its metrics (no Secret access needed)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from commands import codes
from commands.certificates.x509 import days_left, expiry_code
from commands.checks.certs.expiry import expiry_args
from commands.checks.certs.mesh_ca import root_remediation
from commands.checks.registry import CheckContext
from commands.errors import MeshbotError
from commands.findings import Finding
from commands.times import human_duration, rfc3339

METRICS_PATH = "/metrics"
ISTIOD_EXPIRY_GAUGES = {
    "citadel_server_root_cert_expiry_timestamp": "mesh root CA",
    "citadel_server_cert_chain_expiry_timestamp": "mesh CA certificate chain",
}


def parse_ca_expiry_metrics(text: str) -> dict[str, datetime]:
    """``citadel_server_*_expiry_timestamp`` gauges (unix seconds) from Prometheus text; unset ones are skipped."""
    found: dict[str, datetime] = {}
    for line in text.splitlines():
        if "{" in line:
            name, _, rest = line.partition("{")
            rest = rest.rpartition("}")[2]
        else:
            name, _, rest = line.partition(" ")
        if name not in ISTIOD_EXPIRY_GAUGES or name in found:
            continue
        try:
            seconds = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if seconds > 0:  # 0 when istiod is not the CA (external CA): nothing to say
            found[name] = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return found


def istiod_ca_expiry(ctx: CheckContext, reported: set[datetime]) -> Iterator[Finding]:
    if ctx.endpoints is None:
        return
    expiries: dict[str, tuple[datetime, str]] = {}
    for target in ctx.endpoints.istiod_targets(ctx.snapshot):
        origin = f"istiod {target}" if isinstance(target, str) else target.origin
        try:
            with ctx.endpoints.open_istiod(target) as endpoint:
                gauges = parse_ca_expiry_metrics(endpoint.get_text(METRICS_PATH))
        except MeshbotError as exc:
            yield codes.finding("MB0004", check="certs", origin=origin, check_name="certs (istiod CA metrics)",
                                reason=str(exc), evidence={"endpoint": getattr(exc, "endpoint", None)})
            continue
        for name, moment in gauges.items():
            expiries.setdefault(name, (moment, origin))
    for name, (not_after, origin) in expiries.items():
        # The same certificate read from a Secret, ConfigMap or Envoy was already reported.
        if any(abs(not_after - known) < timedelta(seconds=1) for known in reported):
            continue
        reported.add(not_after)
        yield _istiod_finding(ISTIOD_EXPIRY_GAUGES[name], name, not_after, origin, ctx)


def _istiod_finding(what: str, metric: str, not_after: datetime, origin: str, ctx: CheckContext) -> Finding:
    evidence = {"metric": metric, "not_after": rfc3339(not_after), "days_left": days_left(not_after, ctx.now)}
    remediation = root_remediation(ctx.snapshot.istio_namespace)
    code = expiry_code(not_after, ctx.now, ctx.thresholds)
    if code is None:
        when = f"on {rfc3339(not_after)} (in {human_duration(not_after - ctx.now)})"
        return codes.finding("MB3015", origin=origin, what=what, when=when, evidence=evidence)
    return codes.finding(code, origin=origin, evidence=evidence, remediation=remediation,
                         **expiry_args(f"{what[0].upper()}{what[1:]} (per istiod)", not_after, None, ctx.now))
