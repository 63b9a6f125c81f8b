"""The ``certs`` check: the mesh root CA, each namespace's root ConfigMap, gateway TLS secrets,
workload certificates loaded in Envoy, and the CA expiry istiod reports.

Every certificate is reported once (by fingerprint) with the places that depend on it.
Only public fields are kept: sources strip keys from Secrets, and ``CertInfo`` holds
nothing secret.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from commands import codes
from commands.checks.registry import CheckContext, check
from commands.cluster.endpoints import PodRef
from commands.checks.envoy import admin_unreachable
from commands.errors import MeshbotError
from commands.findings import Finding, Remediation
from commands.certificates.gateway_credentials import CredentialRef, credential_refs
from commands.cluster.pods import sidecar_spec
from commands.cluster.snapshot import Resource, Snapshot
from commands.certificates.x509 import (
    EXPIRED as EXPIRED_CODE,
)
from commands.certificates.x509 import (
    NOT_YET_VALID as NOT_YET_VALID_CODE,
)
from commands.certificates.x509 import (
    CertificateError,
    CertInfo,
    days_left,
    expiry_code,
    fingerprints,
    human_duration,
    iso,
    parse_base64_pem,
    parse_iso,
    parse_pem_bundle,
)

ROOT_CONFIGMAP = "istio-ca-root-cert"
ROOT_CONFIGMAP_KEY = "root-cert.pem"
PLUGGED_IN_SECRET = "cacerts"
SELF_SIGNED_SECRET = "istio-ca-secret"
GATEWAY_CERT_KEYS = ("tls.crt", "cert")
CERTS_PATH = "/certs"
METRICS_PATH = "/metrics"
ISTIOD_EXPIRY_GAUGES = {
    "citadel_server_root_cert_expiry_timestamp": "mesh root CA",
    "citadel_server_cert_chain_expiry_timestamp": "mesh CA certificate chain",
}
ROTATION_DOCS = "https://istio.io/latest/docs/tasks/security/cert-management/plugin-ca-cert/"


class CertRole(StrEnum):
    MESH_ROOT = "mesh root CA"
    MESH_CA = "mesh CA certificate"
    GATEWAY = "gateway TLS certificate"
    TLS = "TLS certificate"
    WORKLOAD = "workload certificate"


@dataclass(frozen=True)
class LoadedCert:
    """A certificate as Envoy's ``/certs`` describes it: no subject, issuer or fingerprint there."""

    serial: str
    sans: tuple[str, ...]
    not_before: datetime | None
    not_after: datetime

    def evidence(self, now: datetime) -> dict[str, Any]:
        return {"sans": list(self.sans), "serial": self.serial,
                "not_before": iso(self.not_before) if self.not_before else None,
                "not_after": iso(self.not_after), "days_left": days_left(self.not_after, now)}


Certificate = CertInfo | LoadedCert


# -- the inventory: each distinct certificate once, with who depends on it ------------

@dataclass
class InventoryEntry:
    cert: Certificate
    role: CertRole
    origin: str
    reference: str | None
    remediation: Remediation
    namespaces: set[str] = field(default_factory=set)
    dependents: set[str] = field(default_factory=set)

    @property
    def what(self) -> str:
        label = self.cert.subject if isinstance(self.cert, CertInfo) else ", ".join(self.cert.sans)
        text = f'{self.role} "{label}"' if label else f"{self.role} (serial {self.cert.serial})"
        return text[0].upper() + text[1:]


class CertificateInventory:
    """Certificates keyed by fingerprint; Envoy's copies are matched by serial and notAfter."""

    def __init__(self) -> None:
        self._entries: dict[str, InventoryEntry] = {}
        self._by_serial: dict[tuple[str, datetime], str] = {}

    def add(self, cert: Certificate, *, role: CertRole, origin: str, remediation: Remediation,
            namespace: str | None, dependent: str | None = None, reference: str | None = None) -> None:
        key = self._key(cert)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = InventoryEntry(cert, role, origin, reference, remediation)
            self._by_serial[(cert.serial, cert.not_after)] = key
        self.add_dependent(cert, dependent, namespace)

    def add_dependent(self, cert: Certificate, dependent: str | None, namespace: str | None) -> None:
        entry = self._entries.get(self._key(cert))
        if entry is None:
            return
        if dependent:
            entry.dependents.add(dependent)
        if namespace:
            entry.namespaces.add(namespace)

    def entries(self) -> list[InventoryEntry]:
        return list(self._entries.values())

    def _key(self, cert: Certificate) -> str:
        if isinstance(cert, CertInfo):
            return cert.fingerprint
        return self._by_serial.get((cert.serial, cert.not_after), f"serial:{cert.serial}")


# -- the check ------------------------------------------------------------------------

@check("certs", kinds=("Secret", "ConfigMap", "Gateway", "Pod", "Namespace"),
       summary="mesh root CA, istio-ca-root-cert in every namespace, gateway TLS secrets, workload certificates")
def certs(ctx: CheckContext) -> list[Finding]:
    inventory = CertificateInventory()
    findings = _add_long_lived(ctx, inventory)
    findings.extend(_workload_certificates(ctx, inventory))
    expiry = [f for entry in inventory.entries() if _in_scope(entry, ctx) for f in _expiry_findings(entry, ctx)]
    findings.extend(expiry)
    findings.extend(_istiod_ca_expiry(ctx, {entry.cert.not_after for entry in inventory.entries()}))
    return findings


def certificate_inventory(ctx: CheckContext) -> tuple[list[InventoryEntry], list[Finding]]:
    """The long-lived certificates a mesh depends on (roots, CA, gateway and other watched TLS secrets),
    each once with its dependents; workload certificates (hours-long, rotated by istiod) are left out.
    The findings say what could not be read."""
    inventory = CertificateInventory()
    problems = _add_long_lived(ctx, inventory)
    return [e for e in inventory.entries() if _in_scope(e, ctx)], problems


def _add_long_lived(ctx: CheckContext, inventory: CertificateInventory) -> list[Finding]:
    """Mesh root and CA, root ConfigMaps, gateway and other TLS secrets into ``inventory``; returns the
    findings about them (unreadable data, roots that differ, missing gateway credentials)."""
    findings: list[Finding] = []
    root = find_mesh_root(ctx.snapshot, inventory, findings)
    findings.extend(_root_configmaps(ctx, root, inventory))
    findings.extend(_gateway_credentials(ctx, inventory))
    _other_tls_secrets(ctx, inventory)
    return findings


def _in_scope(entry: InventoryEntry, ctx: CheckContext) -> bool:
    return ctx.namespace is None or ctx.namespace in entry.namespaces


# Istio rotates workload certificates at half their lifetime (SECRET_GRACE_PERIOD_RATIO=0.5);
# one still in use at 75% means rotation is failing.
WORKLOAD_ROTATION_OVERDUE = 0.75


def _expiry_findings(entry: InventoryEntry, ctx: CheckContext) -> Iterator[Finding]:
    cert = entry.cert
    args = _expiry_args(entry.what, cert.not_after, cert.not_before, ctx.now)
    code = expiry_code(cert.not_after, ctx.now, ctx.thresholds, not_before=cert.not_before)
    if _short_lived_workload(entry, ctx) and code not in (EXPIRED_CODE, NOT_YET_VALID_CODE):
        # Istio's workload certificates live ~24 h: the day thresholds would flag every one of them.
        code, args = _workload_rotation(cert, ctx.now, args)
    if code is None:
        return
    evidence = {**cert.evidence(ctx.now), "dependents": sorted(entry.dependents)}
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


def _expiry_args(what: str, not_after: datetime, not_before: datetime | None, now: datetime) -> dict[str, str]:
    return {"what": what, "not_after": iso(not_after), "not_before": iso(not_before) if not_before else "",
            "ago": human_duration(now - not_after), "left": human_duration(not_after - now)}


# -- the mesh root CA -----------------------------------------------------------------

@dataclass(frozen=True)
class MeshRoot:
    source: Resource
    roots: tuple[CertInfo, ...]
    """What every namespace's istio-ca-root-cert must contain (several during a rotation)."""

    @property
    def fingerprints(self) -> set[str]:
        return fingerprints(self.roots)


# In the order istiod itself prefers them; root-cert.pem/ca-cert.pem first names the root.
_ROOT_SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Secret", PLUGGED_IN_SECRET, ("root-cert.pem", "ca-cert.pem", "cert-chain.pem")),
    ("Secret", SELF_SIGNED_SECRET, ("ca-cert.pem",)),
    ("ConfigMap", ROOT_CONFIGMAP, (ROOT_CONFIGMAP_KEY,)),
)


def find_mesh_root(snapshot: Snapshot, inventory: CertificateInventory, findings: list[Finding]) -> MeshRoot | None:
    """The mesh root from cacerts, istio-ca-secret (when the snapshot holds them) or the root ConfigMap.

    Every certificate of the chosen source goes into the inventory; unparsable data becomes MB3013.
    """
    for kind, name, keys in _ROOT_SOURCES:
        source = snapshot.get(kind, snapshot.istio_namespace, name)
        if source is None:
            continue
        bundles = {key: found for key in keys if (found := _parse_key(source, key, findings)) is not None}
        if not bundles:
            continue
        roots = tuple(next(iter(bundles.values())))
        remediation = _root_remediation(name, snapshot.istio_namespace)
        for bundle in bundles.values():
            for cert in bundle:
                role = CertRole.MESH_ROOT if cert in roots else CertRole.MESH_CA
                inventory.add(cert, role=role, origin=source.origin, reference=source.source,
                              remediation=remediation, namespace=source.namespace)
        return MeshRoot(source=source, roots=roots)
    return None


def _parse_key(resource: Resource, key: str, findings: list[Finding]) -> list[CertInfo] | None:
    """The certificates under ``key``; None when absent, or broken (then MB3013 is added to ``findings``)."""
    try:
        return certificates_in(resource, key)
    except CertificateError as exc:
        findings.append(codes.finding(
            "MB3013", origin=resource.origin, reference=resource.source, what=f"{key} of {resource.origin}",
            reason=str(exc), evidence={"key": key},
            remediation=Remediation(f"Replace {key} in {resource.origin} with PEM certificates")))
        return None


def certificates_in(resource: Resource, key: str) -> list[CertInfo] | None:
    """The certificates under ``key`` of a ConfigMap (``data``) or Secret (base64 ``data``, or ``stringData``).

    None when the key is absent; CertificateError when it holds no readable certificate.
    """
    value = (resource.body.get("data") or {}).get(key)
    if resource.kind == "Secret":
        if isinstance(value, str):
            return parse_base64_pem(value)
        value = (resource.body.get("stringData") or {}).get(key)
    return parse_pem_bundle(value) if isinstance(value, str) else None


def _root_remediation(source: str, istio_namespace: str) -> Remediation:
    if source == PLUGGED_IN_SECRET:
        return Remediation(
            "Rotate the plugged-in CA: build a new cacerts (ca-cert.pem, ca-key.pem, cert-chain.pem, and a "
            "root-cert.pem holding the old and the new root during the transition), apply it, restart istiod, "
            f"then restart workloads so they get certificates from the new chain ({ROTATION_DOCS})",
            command=f"kubectl -n {istio_namespace} create secret generic cacerts --from-file=ca-cert.pem "
                    "--from-file=ca-key.pem --from-file=root-cert.pem --from-file=cert-chain.pem "
                    f"--dry-run=client -o yaml | kubectl apply -f - && kubectl -n {istio_namespace} "
                    "rollout restart deployment/istiod")
    if source == SELF_SIGNED_SECRET:
        return Remediation(
            "istiod's self-signed root cannot be extended in place: plug in a CA (cacerts) whose root-cert.pem "
            "carries the old and the new root, or delete istio-ca-secret so istiod mints a new root, then "
            f"restart istiod and every workload (mTLS fails between old and new roots until then; {ROTATION_DOCS})",
            command=f"kubectl -n {istio_namespace} delete secret istio-ca-secret && "
                    f"kubectl -n {istio_namespace} rollout restart deployment/istiod")
    return Remediation(
        "Rotate the mesh root CA: with a plugged-in CA renew the cacerts Secret, with istiod's self-signed CA "
        f"replace istio-ca-secret; then restart istiod and the workloads ({ROTATION_DOCS})",
        command=f"kubectl -n {istio_namespace} get secrets cacerts istio-ca-secret -o name")


# -- istio-ca-root-cert in every namespace -------------------------------------------

def _root_configmaps(ctx: CheckContext, root: MeshRoot | None, inventory: CertificateInventory) -> Iterator[Finding]:
    snapshot = ctx.snapshot
    with_configmap = set()
    for configmap in snapshot.of_kind("ConfigMap"):
        if configmap.name != ROOT_CONFIGMAP or not configmap.namespace:
            continue
        namespace = configmap.namespace
        with_configmap.add(namespace)
        problems: list[Finding] = []
        found = _parse_key(configmap, ROOT_CONFIGMAP_KEY, problems) or []
        for cert in found:
            inventory.add_dependent(cert, f"namespace {namespace}", namespace)
        if not ctx.in_scope(namespace):
            continue
        yield from problems
        if root is None or problems:
            continue
        missing = root.fingerprints - fingerprints(found)
        if missing:
            yield _root_mismatch(configmap, root, found, sorted(missing))
    yield from _missing_root_configmaps(ctx, with_configmap)


def _root_mismatch(configmap: Resource, root: MeshRoot, found: list[CertInfo], missing: list[str]) -> Finding:
    namespace = configmap.namespace or ""
    return codes.finding(
        "MB3010", origin=configmap.origin, reference=configmap.source, namespace=namespace,
        expected=", ".join(missing),
        evidence={"mesh_root_source": root.source.origin, "expected_fingerprints": missing,
                  "found": [{"subject": c.subject, "fingerprint": c.fingerprint, "not_after": iso(c.not_after)}
                            for c in found]},
        remediation=Remediation(
            "istiod writes istio-ca-root-cert into every namespace; a foreign root means a stale copy or a "
            "second control plane. Delete it so istiod recreates it, then restart the namespace's workloads",
            command=f"kubectl -n {namespace} delete configmap {ROOT_CONFIGMAP}"))


def _missing_root_configmaps(ctx: CheckContext, with_configmap: set[str]) -> Iterator[Finding]:
    snapshot = ctx.snapshot
    if not snapshot.can_trust_absence("ConfigMap"):
        return
    injected = sorted({p.namespace for p in snapshot.of_kind("Pod") if p.namespace and sidecar_spec(p)})
    for namespace in injected:
        if namespace in with_configmap or not ctx.in_scope(namespace):
            continue
        yield codes.finding(
            "MB3011", origin=f"Namespace {namespace}", namespace=namespace,
            evidence={"namespace": namespace, "configmap": ROOT_CONFIGMAP},
            remediation=Remediation(
                "istiod's namespace controller writes this ConfigMap; check istiod's log for errors about the "
                "namespace and restart istiod to resync",
                command=f"kubectl -n {snapshot.istio_namespace} logs deployment/istiod | grep {namespace}"))


# -- gateway credentials --------------------------------------------------------------

def _gateway_credentials(ctx: CheckContext, inventory: CertificateInventory) -> list[Finding]:
    unavailable: dict[tuple[Any, ...], Finding] = {}
    for ref in credential_refs(ctx.snapshot):
        if not (ctx.in_scope(ref.secret_namespace) or ctx.in_scope(ref.gateway.namespace)):
            continue
        secret = ctx.snapshot.get("Secret", ref.secret_namespace, ref.credential_name)
        if secret is None and not ctx.snapshot.can_trust_absence("Secret"):
            continue  # unreadable Secrets are reported by the source; absence proves nothing
        where = f"Secret {ref.secret_namespace}/{ref.credential_name}"
        served, reason = _gateway_certificates(where, secret) if secret else ([], f"{where} does not exist")
        if secret is None or reason:
            unavailable.setdefault((ref.gateway.key, ref.secret_key), _credential_unavailable(ref, reason or ""))
            continue
        for cert in served:
            inventory.add(cert, role=CertRole.GATEWAY, origin=secret.origin, reference=secret.source,
                          remediation=_gateway_remediation(secret), namespace=secret.namespace,
                          dependent=_gateway_dependent(ref))
            inventory.add_dependent(cert, None, ref.gateway.namespace)
    return list(unavailable.values())


def _gateway_certificates(where: str, secret: Resource) -> tuple[list[CertInfo], str | None]:
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


def _other_tls_secrets(ctx: CheckContext, inventory: CertificateInventory) -> None:
    """Secrets the snapshot holds that no Gateway references (MESHBOT_EXTRA_SECRETS): watched for expiry too."""
    for secret in ctx.snapshot.of_kind("Secret"):
        if secret.name in (PLUGGED_IN_SECRET, SELF_SIGNED_SECRET) and secret.namespace == ctx.snapshot.istio_namespace:
            continue
        served, reason = _gateway_certificates(secret.origin, secret)
        if reason:
            continue  # not a TLS Secret (a gateway's unreadable credential is reported as MB3012)
        for cert in served:
            inventory.add(cert, role=CertRole.TLS, origin=secret.origin, reference=secret.source,
                          remediation=_gateway_remediation(secret), namespace=secret.namespace)


# -- workload certificates from Envoy ------------------------------------------------

def parse_envoy_certs(answer: Any) -> tuple[list[LoadedCert], list[LoadedCert]]:
    """Envoy ``/certs`` -> (certificate chains, CA certificates), each distinct once."""
    chains: dict[str, LoadedCert] = {}
    cas: dict[str, LoadedCert] = {}
    entries = answer.get("certificates") if isinstance(answer, Mapping) else None
    for entry in entries or []:
        for details in entry.get("cert_chain") or []:
            _add_loaded(chains, details)
        for details in entry.get("ca_cert") or []:
            _add_loaded(cas, details)
    return list(chains.values()), list(cas.values())


def _add_loaded(into: dict[str, LoadedCert], details: Mapping[str, Any]) -> None:
    # days_until_expiration is a string that reads "0" both on the last day and long after
    # expiry, so the decision is made from expiration_time / valid_from only.
    try:
        not_after = parse_iso(details["expiration_time"])
        not_before = parse_iso(details["valid_from"]) if details.get("valid_from") else None
        serial = format(int(details.get("serial_number") or "0", 16), "x")
    except (KeyError, TypeError, ValueError):
        return
    sans = tuple(str(v) for san in details.get("subject_alt_names") or [] for v in san.values())
    into.setdefault(serial, LoadedCert(serial=serial, sans=sans, not_before=not_before, not_after=not_after))


def _workload_certificates(ctx: CheckContext, inventory: CertificateInventory) -> Iterator[Finding]:
    if ctx.endpoints is None:
        return
    for target in ctx.endpoints.envoy_targets(ctx.snapshot, ctx.namespace):
        try:
            with ctx.endpoints.open_envoy(target, ctx.snapshot) as endpoint:
                chains, cas = parse_envoy_certs(endpoint.get_json(CERTS_PATH))
        except MeshbotError as exc:
            yield admin_unreachable(target, exc, check="certs")
            continue
        origin = f"Pod {target}"
        if not chains:
            yield codes.finding("MB3014", origin=origin, pod=str(target), evidence={"ca_certificates": len(cas)},
                                remediation=_workload_remediation(target))
        for cert in chains:
            inventory.add(cert, role=CertRole.WORKLOAD, origin=origin, remediation=_workload_remediation(target),
                          namespace=target.namespace, dependent=origin)
        for cert in cas:
            inventory.add(cert, role=CertRole.MESH_ROOT, origin=origin,
                          remediation=_root_remediation("", ctx.snapshot.istio_namespace),
                          namespace=target.namespace, dependent=origin)


def _workload_remediation(target: PodRef) -> Remediation:
    return Remediation(
        "istio-agent renews workload certificates from istiod long before they expire; an old or missing one "
        "means it cannot reach the CA. Check istiod's CA (its log, the root CA expiry), then restart the pod",
        command=f"kubectl -n {target.namespace} delete pod {target.name}")


# -- istiod's view of the CA (no secret access needed) -------------------------------

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


def _istiod_ca_expiry(ctx: CheckContext, reported: set[datetime]) -> Iterator[Finding]:
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
    evidence = {"metric": metric, "not_after": iso(not_after), "days_left": days_left(not_after, ctx.now)}
    remediation = _root_remediation("", ctx.snapshot.istio_namespace)
    code = expiry_code(not_after, ctx.now, ctx.thresholds)
    if code is None:
        when = f"on {iso(not_after)} (in {human_duration(not_after - ctx.now)})"
        return codes.finding("MB3015", origin=origin, what=what, when=when, evidence=evidence)
    return codes.finding(code, origin=origin, evidence=evidence, remediation=remediation,
                         **_expiry_args(f"{what[0].upper()}{what[1:]} (per istiod)", not_after, None, ctx.now))

