"""Mint X.509 certificates for tests (and the demo scenario) with ``cryptography``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Minted:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()

    @property
    def serial_hex(self) -> str:
        return format(self.cert.serial_number, "x")


def mint(
    common_name: str,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: float | None = None,
    issuer: Minted | None = None,
    is_ca: bool = False,
    dns_names: tuple[str, ...] = (),
    uris: tuple[str, ...] = (),
    organization: str | None = None,
    serial: int | None = None,
) -> Minted:
    """A certificate valid from ``not_before`` (default: a year ago) to ``not_after`` (or +``days`` from now).

    ``issuer`` signs it; without one it is self-signed (a root when ``is_ca``).
    """
    now = datetime.now(timezone.utc)
    not_before = not_before or (now - timedelta(days=365))
    if not_after is None:
        not_after = now + timedelta(days=days if days is not None else 365)
    key = ec.generate_private_key(ec.SECP256R1())
    name_parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        name_parts.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(name_parts)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.UniformResourceIdentifier(u) for u in uris]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    signer = issuer.key if issuer else key
    return Minted(cert=builder.sign(signer, hashes.SHA256()), key=key)
