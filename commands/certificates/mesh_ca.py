"""Which CA istiod signs with, read the way istiod itself reads it.

istiod looks for its signing CA in this order (istio/istio pilot/pkg/bootstrap/istio_ca.go,
``detectSigningCABundleAndCRL`` and ``createIstioCA``; file names from security/pkg/pki/ca/ca.go):

1. the ``cacerts`` Secret mounted at /etc/cacerts, in the kubernetes.io/tls layout when ``tls.crt``
   exists (signing cert ``tls.crt``, key ``tls.key``, roots ``ca.crt``, chain ``tls.crt`` + ``ca.crt``),
   otherwise in Istio's layout (``ca-cert.pem``, ``ca-key.pem``, ``cert-chain.pem``, ``root-cert.pem``).
   Every file must be there: since Istio 1.27 (``checkCABundleCompleteness``, PR #55696) a partial
   bundle stops istiod with "incomplete signing CA bundle detected"; before that a missing
   root-cert.pem failed ``NewVerifiedKeyCertBundleFromFile``.
   A ``cacerts`` holding the ``istio-generated`` marker was written by istiod itself
   (USE_CACERTS_FOR_SELF_SIGNED_CA) and is a self-signed CA, not a plugged-in one.
2. otherwise its self-signed CA in ``istio-ca-secret``: the root is ``ca-cert.pem``
   (security/pkg/pki/ca/ca.go ``loadSelfSignedCaSecret``).  Its ``root-cert.pem`` is not read and
   goes stale: the root rotator rewrites only ca-cert.pem and ca-key.pem
   (security/pkg/pki/ca/selfsignedcarootcertrotator.go ``updateRootCertificate``).
3. meshbot reads those Secrets only when opted in (they hold the CA key); by default the roots
   come from the ``istio-ca-root-cert`` ConfigMap istiod publishes, and which root signs is unknown.

Only certificates are read here: the key files are stripped before a Secret reaches a check
(commands/certificates/secrets.py) and nothing below looks at them.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from commands.certificates.x509 import CertificateError, CertInfo, anchoring_roots, parse_pem_bundle
from commands.cluster.snapshot import Resource, Snapshot

PLUGGED_IN_SECRET = "cacerts"                # ca.CACertsSecret
SELF_SIGNED_SECRET = "istio-ca-secret"       # ca.CASecret
ROOT_CONFIGMAP = "istio-ca-root-cert"        # features.CACertConfigMapName
ROOT_CONFIGMAP_KEY = "root-cert.pem"         # constants.CACertNamespaceConfigMapDataName
ISTIO_GENERATED = "istio-generated"          # ca.IstioGenerated: cacerts written by istiod itself
CHAIN_TOP = "the self-signed top of"


@dataclass(frozen=True)
class CaLayout:
    """The file names of one cacerts layout; the key file is never read, only named in advice."""

    name: str
    signing_cert: str
    signing_key: str
    roots: str
    chain: tuple[str, ...]

    @property
    def certificate_files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.signing_cert, *self.chain, self.roots)))


TLS_LAYOUT = CaLayout("kubernetes.io/tls", signing_cert="tls.crt", signing_key="tls.key", roots="ca.crt",
                      chain=("tls.crt", "ca.crt"))
ISTIO_LAYOUT = CaLayout("Istio", signing_cert="ca-cert.pem", signing_key="ca-key.pem", roots="root-cert.pem",
                        chain=("cert-chain.pem",))


class CaMode(StrEnum):
    PLUGGED_IN = "plugged-in CA (cacerts)"
    SELF_SIGNED = "istiod's self-signed CA"
    PUBLISHED = "root published by istiod (istio-ca-root-cert)"


@dataclass(frozen=True)
class Unreadable:
    resource: Resource
    key: str
    reason: str


@dataclass(frozen=True)
class MeshCa:
    """The CA istiod uses: its trust bundle, its signing chain and what is wrong with its files."""

    mode: CaMode
    source: Resource
    roots: tuple[CertInfo, ...]
    """The trust bundle istiod hands to workloads (several roots during a rotation)."""
    signing: tuple[CertInfo, ...] = ()
    """The signing certificate and the intermediates of its chain (none of the roots)."""
    anchors: frozenset[str] | None = None
    """Fingerprints of the roots the signing certificate chains to; None when unknown (ConfigMap only)."""
    layout: CaLayout | None = None
    missing: tuple[str, ...] = ()
    """Certificate files istiod needs in this layout that are absent (then istiod refuses the bundle)."""
    roots_from: str = ""
    """Where ``roots`` came from when not from the layout's root file (e.g. the chain's self-signed top)."""
    ignored: tuple[Resource, ...] = ()
    """CA Secrets present but unused by istiod in this mode (a leftover istio-ca-secret)."""

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(r.fingerprint for r in self.roots)

    def current_roots(self, now: datetime) -> frozenset[str]:
        """The roots trust rests on now: the anchors when known, else every unexpired root (or all, if none)."""
        if self.anchors:
            return self.anchors
        valid = frozenset(r.fingerprint for r in self.roots if r.not_before <= now < r.not_after)
        return valid or self.fingerprints

    def superseding_root(self, root: CertInfo, now: datetime) -> CertInfo | None:
        """Another root of the bundle that anchors trust in place of ``root``, if there is one.

        A TLS peer validates against any root of its trust bundle (Envoy's validation context holds
        them all), so an expired extra root breaks nothing while a valid root anchors the chain.
        With the signing chain known, only a valid anchor counts; without it (ConfigMap only) an
        already expired root is surely not the one in use, an expiring one may still be.
        """
        others = [r for r in self.roots if r.fingerprint != root.fingerprint
                  and r.not_before <= now < r.not_after and r.not_after > root.not_after]
        if self.anchors is not None:
            others = [r for r in others if r.fingerprint in self.anchors]
        elif root.not_after > now:
            return None
        return max(others, key=lambda r: r.not_after, default=None)


def pem_of(resource: Resource, key: str) -> bytes | None:
    """The PEM text under ``key`` of a ConfigMap (``data``) or Secret (base64 ``data`` or ``stringData``).

    None when the key is absent; CertificateError when a Secret's value is not base64.
    """
    value = (resource.body.get("data") or {}).get(key)
    if resource.kind == "Secret":
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=False)
            except (binascii.Error, ValueError):
                raise CertificateError("not valid base64") from None
        value = (resource.body.get("stringData") or {}).get(key)
    return value.encode() if isinstance(value, str) else None


def has_key(resource: Resource, key: str) -> bool:
    return any(key in (resource.body.get(section) or {}) for section in ("data", "stringData"))


class _Reader:
    """Parses keys of one snapshot, remembering what could not be read."""

    def __init__(self) -> None:
        self.unreadable: list[Unreadable] = []
        self._pems: dict[tuple[tuple[str, str | None, str], str], bytes | None] = {}
        self._parsed: dict[tuple[tuple[str, str | None, str], str], list[CertInfo]] = {}

    def pem(self, resource: Resource, key: str) -> bytes | None:
        if (resource.key, key) not in self._pems:
            self._pems[(resource.key, key)] = self._read(resource, key)
        return self._pems[(resource.key, key)]

    def _read(self, resource: Resource, key: str) -> bytes | None:
        try:
            pem = pem_of(resource, key)
        except CertificateError as exc:
            self.unreadable.append(Unreadable(resource, key, str(exc)))
            return None
        if pem is not None and not pem.strip():
            return None  # istiod writes an empty cert-chain.pem into istio-ca-secret (ca.go BuildSecret)
        return pem

    def certificates(self, resource: Resource, key: str) -> list[CertInfo]:
        cached = self._parsed.get((resource.key, key))
        if cached is None:
            cached = self._parsed[(resource.key, key)] = self._parse(resource, key)
        return cached

    def _parse(self, resource: Resource, key: str) -> list[CertInfo]:
        pem = self.pem(resource, key)
        if pem is None:
            return []
        try:
            return parse_pem_bundle(pem)
        except CertificateError as exc:
            self.unreadable.append(Unreadable(resource, key, str(exc)))
            return []


def read_mesh_ca(snapshot: Snapshot) -> tuple[MeshCa | None, list[Unreadable]]:
    """The CA istiod uses, chosen in istiod's order, and the keys that could not be parsed."""
    reader = _Reader()
    namespace = snapshot.istio_namespace
    cacerts = snapshot.get("Secret", namespace, PLUGGED_IN_SECRET)
    ca_secret = snapshot.get("Secret", namespace, SELF_SIGNED_SECRET)
    published = snapshot.get("ConfigMap", namespace, ROOT_CONFIGMAP)
    mesh_ca = None
    if cacerts is not None and has_key(cacerts, ISTIO_GENERATED):
        # ca.go NewSelfSignedIstioCAOptions: "always use istio-ca-secret in priority, otherwise fall back to cacerts".
        chosen = ca_secret or cacerts
        mesh_ca = _self_signed(chosen, reader, ignored=(cacerts,) if chosen is ca_secret else ())
    elif cacerts is not None and any(has_key(cacerts, f) for f in ISTIO_LAYOUT.certificate_files
                                     + TLS_LAYOUT.certificate_files):
        mesh_ca = _plugged_in(cacerts, reader, published, ignored=(ca_secret,) if ca_secret else ())
    elif ca_secret is not None:
        mesh_ca = _self_signed(ca_secret, reader)
    if mesh_ca is None and published is not None:
        roots = tuple(reader.certificates(published, ROOT_CONFIGMAP_KEY))
        mesh_ca = MeshCa(CaMode.PUBLISHED, published, roots) if roots else None
    return mesh_ca, reader.unreadable


def _self_signed(secret: Resource, reader: _Reader, ignored: tuple[Resource, ...] = ()) -> MeshCa | None:
    roots = tuple(reader.certificates(secret, ISTIO_LAYOUT.signing_cert))
    if not roots:
        return None
    # The self-signed root signs workload certificates itself: it is its own anchor.
    return MeshCa(CaMode.SELF_SIGNED, secret, roots, anchors=frozenset(r.fingerprint for r in roots),
                  ignored=ignored)


def _plugged_in(secret: Resource, reader: _Reader, published: Resource | None,
                ignored: tuple[Resource, ...]) -> MeshCa:
    # istio_ca.go detectSigningCABundleAndCRL: the tls layout wins whenever tls.crt exists.
    layout = TLS_LAYOUT if has_key(secret, TLS_LAYOUT.signing_cert) else ISTIO_LAYOUT
    missing = tuple(f for f in (layout.signing_cert, layout.roots) if not has_key(secret, f))
    if not any(has_key(secret, f) for f in layout.chain):
        missing += layout.chain[:1]  # hasValidChainFiles: one existing chain file is enough
    roots = tuple(reader.certificates(secret, layout.roots))
    roots_from = ""
    if not roots:
        roots, roots_from = _roots_without_root_file(secret, reader, layout, published)
    root_fps = {r.fingerprint for r in roots}
    signing = tuple(dict.fromkeys(
        c for f in (layout.signing_cert, *layout.chain) for c in reader.certificates(secret, f)
        if c.fingerprint not in root_fps))
    return MeshCa(CaMode.PLUGGED_IN, secret, roots, signing=signing, layout=layout, missing=missing,
                  anchors=_anchors(secret, reader, layout, roots, roots_from), roots_from=roots_from,
                  ignored=ignored)


def _anchors(secret: Resource, reader: _Reader, layout: CaLayout, roots: tuple[CertInfo, ...],
             roots_from: str) -> frozenset[str] | None:
    """The roots the signing chain rests on; None when that cannot be told (roots taken from elsewhere)."""
    if roots_from.startswith(CHAIN_TOP):
        return frozenset(r.fingerprint for r in roots)  # the chain's own self-signed top anchors it
    chain_pem = b"".join(reader.pem(secret, f) or b"" for f in dict.fromkeys((layout.signing_cert, *layout.chain)))
    roots_pem = reader.pem(secret, layout.roots)
    if not chain_pem or not roots_pem:
        return None
    return anchoring_roots(chain_pem, roots_pem) or None


def _roots_without_root_file(secret: Resource, reader: _Reader, layout: CaLayout,
                             published: Resource | None) -> tuple[tuple[CertInfo, ...], str]:
    """Roots for a bundle that lacks its root file (istiod refuses it): never the intermediate.

    The self-signed top of the chain is the root the chain was issued from; without one, what
    istiod still publishes in istio-system is what workloads trust.
    """
    chain = [c for f in (layout.signing_cert, *layout.chain) for c in reader.certificates(secret, f)]
    tops = tuple(dict.fromkeys(c for c in chain if c.is_self_signed))
    if tops:
        return tops, f"{CHAIN_TOP} {' + '.join(dict.fromkeys((layout.signing_cert, *layout.chain)))}"
    if published is not None:
        return tuple(reader.certificates(published, ROOT_CONFIGMAP_KEY)), published.origin
    return (), ""
