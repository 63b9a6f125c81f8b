"""What istiod itself reports about its CA on ``/metrics`` (no Secret access needed): expiry and signing health."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from commands import codes
from commands.certificates.x509 import days_left, expiry_code
from commands.checks.certs.expiry import expiry_args
from commands.checks.certs.mesh_ca import root_remediation
from commands.checks.istiod_metrics import METRICS_PATH, parse_samples, total
from commands.checks.registry import CheckContext
from commands.errors import MeshbotError
from commands.findings import Finding, Remediation
from commands.times import human_duration, rfc3339

ISTIOD_EXPIRY_GAUGES = {
    "citadel_server_root_cert_expiry_timestamp": "mesh root CA",
    "citadel_server_cert_chain_expiry_timestamp": "mesh CA certificate chain",
}


# security/pkg/server/ca/monitoring.go: counters since istiod started.  Only signing errors are the CA's own
# failure; a CSR that does not parse, an identity that cannot be extracted or a caller that fails authentication
# is the caller's problem (server.go CreateCertificate returns before signing), so those are context only.
CA_REQUESTS = "citadel_server_csr_count"
CA_ISSUED = "citadel_server_success_cert_issuance_count"
CA_SIGN_ERRORS = "citadel_server_csr_sign_err_count"
CALLER_ERRORS = {
    "citadel_server_csr_parsing_err_count": "CSRs that did not parse",
    "citadel_server_id_extraction_err_count": "callers without an identity",
    "citadel_server_authentication_failure_count": "callers failing authentication",
}


def ca_signing_finding(text: str, origin: str, ctx: CheckContext) -> Finding | None:
    """MB3020 when istiod's CA fails to sign a share of the CSRs it received (``thresholds.ca_sign_error_share``).

    The counters are cumulative since istiod started, so a failure that began after a long healthy run shows
    late; Prometheus (rates) sees it sooner.
    """
    samples = parse_samples(text, {CA_REQUESTS, CA_ISSUED, CA_SIGN_ERRORS, *CALLER_ERRORS})
    counters = {name: total(samples, name) for name in {s.name for s in samples}}
    errors, requests = int(counters.get(CA_SIGN_ERRORS, 0)), int(counters.get(CA_REQUESTS, 0))
    if errors == 0 or errors < ctx.thresholds.ca_sign_error_share * max(requests, errors):
        return None
    causes = [f"{errors} signing errors", f"{int(counters.get(CA_ISSUED, 0))} issued"]
    causes += [f"{int(counters[name])} {what}" for name, what in CALLER_ERRORS.items() if counters.get(name)]
    pod = origin.split(" ", 1)[-1]
    return codes.finding(
        "MB3020", origin=origin, pod=pod, errors=errors, requests=max(requests, errors), causes=", ".join(causes),
        evidence={name: int(value) for name, value in counters.items()},
        # A new pod asks this CA for its first certificate (pkg/istio-agent), so nothing that creates pods helps;
        # istiod logs why signing fails (a plugged-in CA whose key or chain is wrong, an external signer that is
        # down: security/pkg/pki/ca/ca.go Sign).
        remediation=Remediation(
            "Find why istiod's CA cannot sign (its log names the error: a wrong or expired plugged-in CA, an external "
            "signer that is down); do not restart or scale workloads until it signs again",
            command=f"kubectl -n {ctx.snapshot.istio_namespace} logs -l app=istiod --tail=200 | grep -iE 'csr|sign'"))


def parse_ca_expiry_metrics(text: str) -> dict[str, datetime]:
    """``citadel_server_*_expiry_timestamp`` gauges (unix seconds) from Prometheus text; unset ones are skipped."""
    found: dict[str, datetime] = {}
    for sample in parse_samples(text, ISTIOD_EXPIRY_GAUGES):
        # 0 when istiod is not the CA (external CA): nothing to say.
        if sample.name not in found and sample.value > 0:
            found[sample.name] = datetime.fromtimestamp(sample.value, tz=timezone.utc)
    return found


def istiod_ca_expiry(ctx: CheckContext, reported: set[datetime]) -> Iterator[Finding]:
    if ctx.endpoints is None:
        return
    expiries: dict[str, tuple[datetime, str]] = {}
    for target in ctx.endpoints.istiod_targets(ctx.snapshot):
        origin = f"istiod {target}" if isinstance(target, str) else target.origin
        try:
            with ctx.endpoints.open_istiod(target) as endpoint:
                text = endpoint.get_text(METRICS_PATH)
        except MeshbotError as exc:
            yield codes.finding("MB0004", check="certs", origin=origin, check_name="certs (istiod CA metrics)",
                                reason=str(exc), evidence={"endpoint": getattr(exc, "endpoint", None)})
            continue
        gauges = parse_ca_expiry_metrics(text)
        signing = ca_signing_finding(text, origin, ctx)
        if signing:
            yield signing
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
