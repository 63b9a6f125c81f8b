"""X.509 certificates reduced to their public facts, and how close they are to expiry.

Only public fields survive parsing (no key, no raw DER), so a ``CertInfo`` is
safe to put in a finding, a log line or a Slack message.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from commands.errors import MeshbotError
from commands.thresholds import Thresholds
from commands.times import rfc3339

PEM_CERTIFICATE_MARKER = "-----BEGIN CERTIFICATE-----"


class CertificateError(MeshbotError):
    """A PEM bundle could not be read; the message never quotes the input."""


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    uris: tuple[str, ...]
    serial: str
    """Lower-case hex without leading zeros."""
    not_before: datetime
    not_after: datetime
    fingerprint: str
    """SHA-256 as ``openssl x509 -fingerprint -sha256`` prints it (``AB:CD:…``)."""
    is_ca: bool

    @property
    def sans(self) -> tuple[str, ...]:
        return self.dns_names + self.uris

    @property
    def is_self_signed(self) -> bool:
        return self.subject == self.issuer

    def evidence(self, now: datetime) -> dict[str, Any]:
        """The public fields as JSON-ready values."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "sans": list(self.sans),
            "serial": self.serial,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "fingerprint": self.fingerprint,
            "days_left": days_left(self.not_after, now),
        }


def cert_info(cert: x509.Certificate) -> CertInfo:
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        dns_names=tuple(_san_values(cert, x509.DNSName)),
        uris=tuple(_san_values(cert, x509.UniformResourceIdentifier)),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=_fingerprint(cert),
        is_ca=_is_ca(cert),
    )


def _san_values(cert: x509.Certificate, kind: type[x509.GeneralName]) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    # cryptography types get_values_for_type with one overload per GeneralName class and none for the base class.
    return [str(v) for v in sans.get_values_for_type(kind)]  # type: ignore[arg-type]  # its overloads, above


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def parse_pem_bundle(pem: str | bytes) -> list[CertInfo]:
    """Every certificate in a PEM bundle, in order; other PEM blocks (keys) are ignored."""
    data = pem.encode() if isinstance(pem, str) else pem
    if PEM_CERTIFICATE_MARKER.encode() not in data:
        raise CertificateError("no PEM certificate found")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        # cryptography's message can be long and low-level; the input is never echoed.
        raise CertificateError("malformed PEM certificate") from None
    return [cert_info(c) for c in certs]


def parse_base64_pem(value: str) -> list[CertInfo]:
    """A Secret's ``data`` value: base64 of a PEM bundle."""
    try:
        decoded = base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        raise CertificateError("not valid base64") from None
    return parse_pem_bundle(decoded)


def fingerprints(certs: Iterable[CertInfo]) -> set[str]:
    return {c.fingerprint for c in certs}


def anchoring_roots(chain_pem: bytes, roots_pem: bytes) -> frozenset[str]:
    """Fingerprints of the roots in ``roots_pem`` that issued a certificate of ``chain_pem`` or are part of it.

    Decided by the issuer name *and* the signature, as a TLS peer would: two roots with the same
    subject but different keys (a plugged-in root rotation) are told apart, while a self-signed
    root istiod renewed from its existing key (GenRootCertFromExistingKey) still anchors certificates
    its predecessor signed.  Unreadable input anchors nothing.
    """
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
        roots = x509.load_pem_x509_certificates(roots_pem)
    except ValueError:
        return frozenset()
    chain_prints = {c.fingerprint(hashes.SHA256()) for c in chain}
    return frozenset(_fingerprint(root) for root in roots
                     if root.fingerprint(hashes.SHA256()) in chain_prints or any(_issued(c, root) for c in chain))


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


# -- expiry ---------------------------------------------------------------------

EXPIRED, EXPIRES_VERY_SOON, EXPIRES_SOON, EXPIRY_NOTICE, NOT_YET_VALID = (
    "MB3001", "MB3002", "MB3003", "MB3004", "MB3005")


def expiry_code(not_after: datetime, now: datetime, thresholds: Thresholds,
                not_before: datetime | None = None) -> str | None:
    """The MB300x code for a validity window seen at ``now``; None when nothing is worth saying."""
    if not_before is not None and now < not_before:
        return NOT_YET_VALID
    left = not_after - now
    if left <= timedelta(0):
        return EXPIRED
    if left <= timedelta(days=thresholds.cert_error_days):
        return EXPIRES_VERY_SOON
    if left <= timedelta(days=thresholds.cert_warning_days):
        return EXPIRES_SOON
    if left <= timedelta(days=thresholds.cert_info_days):
        return EXPIRY_NOTICE
    return None


def days_left(not_after: datetime, now: datetime) -> int:
    """Whole days until ``not_after`` (negative: days since expiry), as the messages count them."""
    return int((not_after - now) / timedelta(days=1))
