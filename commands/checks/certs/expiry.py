"""When a certificate in the inventory is worth a finding: expiry thresholds, workload rotation, superseded roots."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from commands import codes
from commands.certificates.inventory import Certificate, CertRole, InventoryEntry
from commands.certificates.mesh_ca import MeshCa
from commands.certificates.x509 import EXPIRED as EXPIRED_CODE
from commands.certificates.x509 import NOT_YET_VALID as NOT_YET_VALID_CODE
from commands.certificates.x509 import CertInfo, expiry_code
from commands.checks.certs.mesh_ca import ROTATION_DOCS
from commands.checks.registry import CheckContext
from commands.findings import Finding, Remediation
from commands.times import human_duration, rfc3339

# Istio rotates workload certificates at half their lifetime (SECRET_GRACE_PERIOD_RATIO=0.5);
# one still in use at 75% means rotation is failing.
WORKLOAD_ROTATION_OVERDUE = 0.75


def expiry_findings(entry: InventoryEntry, ctx: CheckContext, mesh_ca: MeshCa | None) -> Iterator[Finding]:
    cert = entry.cert
    args = expiry_args(entry.what, cert.not_after, cert.not_before, ctx.now)
    code = expiry_code(cert.not_after, ctx.now, ctx.thresholds, not_before=cert.not_before)
    if _short_lived_workload(entry, ctx) and code not in (EXPIRED_CODE, NOT_YET_VALID_CODE):
        # Istio's workload certificates live ~24 h: the day thresholds would flag every one of them.
        code, args = _workload_rotation(cert, ctx.now, args)
    if code is None:
        return
    evidence = {**cert.evidence(ctx.now), "role": entry.role.name.lower().replace("_", "-"),
                "dependents": sorted(entry.dependents)}
    successor = _superseded_by(entry, code, mesh_ca, ctx.now)
    if successor is not None:
        yield _superseded_root(entry, successor, evidence, ctx.now)
        return
    yield codes.finding(code, origin=entry.origin, reference=entry.reference, evidence=evidence,
                        remediation=entry.remediation, **args)


def _short_lived_workload(entry: InventoryEntry, ctx: CheckContext) -> bool:
    cert = entry.cert
    if entry.role != CertRole.WORKLOAD or cert.not_before is None:
        return False
    return cert.not_after - cert.not_before <= timedelta(days=ctx.thresholds.cert_info_days)


def _workload_rotation(cert: Certificate, now: datetime, args: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    if cert.not_before is None or cert.not_after <= cert.not_before:
        return None, args
    lifetime = cert.not_after - cert.not_before
    used = (now - cert.not_before) / lifetime
    if used < WORKLOAD_ROTATION_OVERDUE:
        return None, args
    return "MB3006", {**args, "percent": str(int(used * 100)), "lifetime": human_duration(lifetime)}


def expiry_args(what: str, not_after: datetime, not_before: datetime | None, now: datetime) -> dict[str, str]:
    return {"what": what, "not_after": rfc3339(not_after), "not_before": rfc3339(not_before) if not_before else "",
            "ago": human_duration(now - not_after), "left": human_duration(not_after - now)}


_EXPIRY_CODES = frozenset({EXPIRED_CODE, "MB3002", "MB3003", "MB3004"})


def _superseded_by(entry: InventoryEntry, code: str, mesh_ca: MeshCa | None, now: datetime) -> CertInfo | None:
    """The root that anchors trust instead of ``entry``'s expiring or expired root, if the bundle has one."""
    cert = entry.cert
    if (mesh_ca is None or entry.role != CertRole.MESH_ROOT or code not in _EXPIRY_CODES
            or not isinstance(cert, CertInfo) or cert.fingerprint not in mesh_ca.fingerprints):
        return None
    return mesh_ca.superseding_root(cert, now)


def _superseded_root(entry: InventoryEntry, successor: CertInfo, evidence: dict[str, Any], now: datetime) -> Finding:
    cert = entry.cert
    state = (f"expired {human_duration(now - cert.not_after)} ago" if cert.not_after <= now
             else f"expires in {human_duration(cert.not_after - now)}")
    return codes.finding(
        "MB3018", origin=entry.origin, reference=entry.reference, what=entry.what, state=state,
        successor=successor.subject, successor_not_after=rfc3339(successor.not_after),
        evidence={**evidence, "anchored_by": successor.evidence(now)},
        # A peer accepts a chain ending at any root of its bundle (Envoy's trusted_ca holds them all),
        # so only the third step of a root rotation is left: drop the old root.
        remediation=Remediation(
            "Once every workload certificate chains to the new root (they renew within their 24 h lifetime), "
            "remove the old root from the trust bundle (root-cert.pem or ca.crt of cacerts) so it stops being "
            f"distributed; removing it earlier breaks mTLS for workloads still holding old certificates "
            f"({ROTATION_DOCS})"))


# -- what to do about the mesh CA ---------------------------------------------------------
