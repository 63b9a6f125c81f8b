"""commands.certificates.x509: PEM bundles -> public CertInfo, and the expiry rules."""

from __future__ import annotations

import base64
import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from commands.certificates.x509 import (
    CertificateError,
    anchoring_roots,
    days_left,
    expiry_code,
    parse_base64_pem,
    parse_pem_bundle,
)
from commands.checks.registry import Thresholds
from tests.support.certs import Minted, mint

NOW = datetime(2026, 11, 24, 3, 7, tzinfo=timezone.utc)


def test_parses_every_certificate_of_a_bundle_in_order() -> None:
    root = mint("Istio CA", is_ca=True, organization="cluster.local")
    leaf = mint("payment", issuer=root, dns_names=("payment.prod.svc",),
                uris=("spiffe://cluster.local/ns/prod/sa/payment",))

    certs = parse_pem_bundle(leaf.cert_pem + root.cert_pem)

    assert [c.subject for c in certs] == ["CN=payment", "CN=Istio CA,O=cluster.local"]
    first = certs[0]
    assert first.issuer == "CN=Istio CA,O=cluster.local"
    assert first.dns_names == ("payment.prod.svc",)
    assert first.uris == ("spiffe://cluster.local/ns/prod/sa/payment",)
    assert first.serial == leaf.serial_hex
    assert first.not_after == leaf.cert.not_valid_after_utc and first.not_after.tzinfo is not None
    assert (first.is_ca, certs[1].is_ca) == (False, True)


def test_fingerprint_is_sha256_as_openssl_prints_it() -> None:
    minted = mint("payment")
    expected = minted.cert.fingerprint(minted.cert.signature_hash_algorithm).hex(":").upper()

    assert parse_pem_bundle(minted.cert_pem)[0].fingerprint == expected
    assert len(expected.split(":")) == 32


def test_cert_info_has_only_public_fields() -> None:
    names = {f.name for f in dataclasses.fields(parse_pem_bundle(mint("x").cert_pem)[0])}

    assert names == {"subject", "issuer", "dns_names", "uris", "serial", "not_before", "not_after",
                     "fingerprint", "is_ca"}


def test_private_key_blocks_in_a_bundle_are_ignored() -> None:
    minted = mint("gateway")

    certs = parse_pem_bundle(minted.cert_pem + minted.key_pem)

    assert len(certs) == 1
    assert "PRIVATE KEY" not in repr(certs)


def test_secret_data_is_base64_of_pem() -> None:
    minted = mint("gateway")

    certs = parse_base64_pem(base64.b64encode(minted.cert_pem.encode()).decode())

    assert certs[0].subject == "CN=gateway"


@pytest.mark.parametrize("text, reason", [
    ("", "no PEM certificate found"),
    ("hello", "no PEM certificate found"),
    ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "malformed PEM certificate"),
])
def test_unparsable_bundles_raise_without_quoting_the_input(text: str, reason: str) -> None:
    with pytest.raises(CertificateError, match=reason) as raised:
        parse_pem_bundle(text)
    assert "AAAA" not in str(raised.value)


def test_a_key_alone_is_not_a_certificate() -> None:
    with pytest.raises(CertificateError, match="no PEM certificate found"):
        parse_pem_bundle(mint("x").key_pem)


@pytest.mark.parametrize("left, code", [
    (timedelta(days=-3), "MB3001"),
    (timedelta(seconds=0), "MB3001"),
    (timedelta(hours=5), "MB3002"),
    (timedelta(days=7), "MB3002"),
    (timedelta(days=7, seconds=1), "MB3003"),
    (timedelta(days=30), "MB3003"),
    (timedelta(days=60), "MB3004"),
    (timedelta(days=90), "MB3004"),
    (timedelta(days=91), None),
])
def test_expiry_code_follows_the_thresholds(left: timedelta, code: str | None) -> None:
    assert expiry_code(NOW + left, NOW, Thresholds()) == code


def test_expiry_thresholds_are_configurable() -> None:
    strict = Thresholds(cert_error_days=14, cert_warning_days=45, cert_info_days=120)

    assert expiry_code(NOW + timedelta(days=10), NOW, strict) == "MB3002"
    assert expiry_code(NOW + timedelta(days=100), NOW, strict) == "MB3004"


def test_not_yet_valid_wins_over_expiry() -> None:
    assert expiry_code(NOW + timedelta(days=3), NOW, Thresholds(), not_before=NOW + timedelta(hours=1)) == "MB3005"


def test_days_left_counts_whole_days_and_goes_negative_after_expiry() -> None:
    assert days_left(NOW + timedelta(days=5, hours=2), NOW) == 5
    assert days_left(NOW - timedelta(days=2, hours=5), NOW) == -2
    assert days_left(NOW - timedelta(minutes=26), NOW) == 0


# -- which roots a chain rests on (signature, not just the issuer name) -----------------------------------------

def renewed_from_existing_key(root: Minted, days: int = 3650) -> Minted:
    """What istiod's root rotator does (util.GenRootCertFromExistingKey): same key and subject, new dates."""
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(root.cert.subject).issuer_name(root.cert.subject)
            .public_key(root.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(root.key, hashes.SHA256()))
    return Minted(cert=cert, key=root.key)


def fingerprint_of(minted: Minted) -> str:
    return parse_pem_bundle(minted.cert_pem)[0].fingerprint


def test_the_root_that_signed_the_intermediate_anchors_the_chain() -> None:
    old, new = mint("Istio CA", is_ca=True), mint("Istio CA", is_ca=True)  # same subject, different keys
    intermediate = mint("Intermediate CA", issuer=new, is_ca=True)

    anchors = anchoring_roots(intermediate.cert_pem.encode(), (old.cert_pem + new.cert_pem).encode())

    assert anchors == {fingerprint_of(new)}


def test_a_root_renewed_from_the_same_key_anchors_what_its_predecessor_signed() -> None:
    old = mint("Istio CA", is_ca=True, organization="cluster.local", days=3)
    leaf = mint("payment", issuer=old)
    renewed = renewed_from_existing_key(old)

    assert anchoring_roots(leaf.cert_pem.encode(), renewed.cert_pem.encode()) == {fingerprint_of(renewed)}


def test_a_self_signed_root_in_its_own_chain_anchors_it_and_garbage_anchors_nothing() -> None:
    root = mint("Istio CA", is_ca=True)

    assert anchoring_roots(root.cert_pem.encode(), root.cert_pem.encode()) == {fingerprint_of(root)}
    assert anchoring_roots(b"not pem", root.cert_pem.encode()) == frozenset()
