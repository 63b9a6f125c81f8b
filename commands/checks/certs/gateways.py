"""Gateway TLS credentials (credentialName) and the other TLS Secrets meshbot is told to watch."""

from __future__ import annotations

from typing import Any

from commands import codes
from commands.certificates.gateway_credentials import CredentialRef, credential_refs
from commands.certificates.inventory import CertificateInventory, CertRole
from commands.certificates.mesh_ca import PLUGGED_IN_SECRET, SELF_SIGNED_SECRET
from commands.certificates.x509 import CertificateError, CertInfo
from commands.checks.certs.mesh_ca import certificates_in
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Resource
from commands.findings import Finding, Remediation

GATEWAY_CERT_KEYS = ("tls.crt", "cert")


def gateway_credentials(ctx: CheckContext, inventory: CertificateInventory) -> list[Finding]:
    unavailable: dict[tuple[Any, ...], Finding] = {}
    for ref in credential_refs(ctx.snapshot):
        if not (ctx.in_scope(ref.secret_namespace) or ctx.in_scope(ref.gateway.namespace)):
            continue
        secret = ctx.snapshot.get("Secret", ref.secret_namespace, ref.credential_name)
        if secret is None and not ctx.snapshot.can_trust_absence("Secret"):
            continue  # unreadable Secrets are reported by the source; absence proves nothing
        where = f"Secret {ref.secret_namespace}/{ref.credential_name}"
        served, reason = gateway_certificates(where, secret) if secret else ([], f"{where} does not exist")
        if secret is None or reason:
            unavailable.setdefault((ref.gateway.key, ref.secret_key), _credential_unavailable(ref, reason or ""))
            continue
        for cert in served:
            inventory.add(cert, role=CertRole.GATEWAY, origin=secret.origin, reference=secret.source,
                          remediation=_gateway_remediation(secret), namespace=secret.namespace,
                          dependent=_gateway_dependent(ref))
            inventory.add_dependent(cert, None, ref.gateway.namespace)
    return list(unavailable.values())


def gateway_certificates(where: str, secret: Resource) -> tuple[list[CertInfo], str | None]:
    """The Secret's certificates, or the reason the gateway cannot use it."""
    for key in GATEWAY_CERT_KEYS:
        try:
            served = certificates_in(secret, key)
        except CertificateError as exc:
            return [], f"{key} of {where} cannot be read: {exc}"
        if served is not None:
            return served, None
    return [], f"{where} has no certificate ({' or '.join(GATEWAY_CERT_KEYS)})"


def _gateway_dependent(ref: CredentialRef) -> str:
    port = f" port {ref.port}" if ref.port else ""
    return f"Gateway {ref.gateway.qualified_name}{port}"


def _credential_unavailable(ref: CredentialRef, reason: str) -> Finding:
    ns, name = ref.secret_key
    # Istio reads credentialName from the gateway workload's namespace and pushes it over SDS when it appears
    # (pilot/pkg/xds/sds.go; https://istio.io/latest/docs/tasks/traffic-management/ingress/secure-ingress/).
    return codes.finding(
        "MB3012", origin=ref.gateway.origin, reference=ref.gateway.source, gateway=ref.gateway.qualified_name,
        credential=ref.credential_name, reason=reason,
        evidence={"secret": f"{ns}/{name}", "port": ref.port, "mode": ref.mode, "hosts": list(ref.hosts)},
        remediation=Remediation(
            f"Create the TLS Secret {name} in namespace {ns} (where the gateway pods run), with tls.crt and "
            "tls.key; cert-manager can issue and renew it",
            command=f"kubectl -n {ns} create secret tls {name} --cert=tls.crt --key=tls.key"))


def _gateway_remediation(secret: Resource) -> Remediation:
    ns, name = secret.namespace, secret.name
    certificate = secret.annotations.get("cert-manager.io/certificate-name")
    # istiod watches credentialName Secrets and pushes a renewed one over SDS, no gateway restart
    # (pilot/pkg/xds/sds.go); `cmctl renew` marks a Certificate for reissue (https://cert-manager.io/docs/reference/cmctl/).
    if certificate:
        return Remediation(
            f"cert-manager manages this Secret: see why Certificate {ns}/{certificate} did not renew "
            f"(kubectl -n {ns} describe certificate {certificate}) and force a renewal; the gateway reloads it",
            command=f"cmctl renew {certificate} -n {ns}")
    return Remediation(
        f"Renew the certificate in Secret {ns}/{name}; the gateway loads the new one without a restart. "
        "cert-manager can renew it automatically",
        command=f"kubectl -n {ns} create secret tls {name} --cert=tls.crt --key=tls.key "
                "--dry-run=client -o yaml | kubectl apply -f -")


def other_tls_secrets(ctx: CheckContext, inventory: CertificateInventory) -> None:
    """Secrets the snapshot holds that no Gateway references (MESHBOT_EXTRA_SECRETS): watched for expiry too."""
    for secret in ctx.snapshot.of_kind("Secret"):
        if secret.name in (PLUGGED_IN_SECRET, SELF_SIGNED_SECRET) and secret.namespace == ctx.snapshot.istio_namespace:
            continue
        served, reason = gateway_certificates(secret.origin, secret)
        if reason:
            continue  # not a TLS Secret (a gateway's unreadable credential is reported as MB3012)
        for cert in served:
            inventory.add(cert, role=CertRole.TLS, origin=secret.origin, reference=secret.source,
                          remediation=_gateway_remediation(secret), namespace=secret.namespace)
