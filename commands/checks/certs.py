"""The ``certs`` check: the mesh root CA, each namespace's root ConfigMap, gateway TLS secrets,
workload certificates loaded in Envoy, and the CA expiry istiod reports.

Every certificate is reported once (by fingerprint) with the places that depend on it.
Only public fields are kept: sources strip keys from Secrets, and ``CertInfo`` holds
nothing secret.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from commands import codes
from commands.checks.registry import CheckContext, check
from commands.cluster.endpoints import PodRef
from commands.checks.envoy import admin_unreachable
from commands.errors import MeshbotError
from commands.findings import Finding, Remediation
from commands.certificates.gateway_credentials import CredentialRef, credential_refs
from commands.certificates.inventory import (
    Certificate,
    CertificateInventory,
    CertRole,
    InventoryEntry,
    LoadedCert,
)
from commands.cluster.pods import sidecar_spec
from commands.cluster.snapshot import Resource
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
    parse_iso,
    parse_pem_bundle,
)
from commands.certificates.mesh_ca import (
    ISTIO_LAYOUT,
    PLUGGED_IN_SECRET,
    ROOT_CONFIGMAP,
    ROOT_CONFIGMAP_KEY,
    SELF_SIGNED_SECRET,
    TLS_LAYOUT,
    CaLayout,
    CaMode,
    MeshCa,
    pem_of,
    read_mesh_ca,
)

GATEWAY_CERT_KEYS = ("tls.crt", "cert")
CERTS_PATH = "/certs"
METRICS_PATH = "/metrics"
ISTIOD_EXPIRY_GAUGES = {
    "citadel_server_root_cert_expiry_timestamp": "mesh root CA",
    "citadel_server_cert_chain_expiry_timestamp": "mesh CA certificate chain",
}
ROTATION_DOCS = "https://istio.io/latest/docs/tasks/security/cert-management/plugin-ca-cert/"


# -- the check ------------------------------------------------------------------------

@check("certs", kinds=("Secret", "ConfigMap", "Gateway", "Pod", "Namespace"),
       summary="mesh root CA, istio-ca-root-cert in every namespace, gateway TLS secrets, workload certificates")
def certs(ctx: CheckContext) -> list[Finding]:
    inventory = CertificateInventory()
    findings = _add_long_lived(ctx, inventory)
    findings.extend(_workload_certificates(ctx, inventory))
    expiry = [f for entry in inventory.entries() if _in_scope(entry, ctx)
              for f in _expiry_findings(entry, ctx, inventory.mesh_ca)]
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
    findings = find_mesh_ca(ctx, inventory)
    findings.extend(_root_configmaps(ctx, inventory.mesh_ca, inventory))
    findings.extend(_gateway_credentials(ctx, inventory))
    _other_tls_secrets(ctx, inventory)
    return findings


def _in_scope(entry: InventoryEntry, ctx: CheckContext) -> bool:
    return ctx.namespace is None or ctx.namespace in entry.namespaces


# Istio rotates workload certificates at half their lifetime (SECRET_GRACE_PERIOD_RATIO=0.5);
# one still in use at 75% means rotation is failing.
WORKLOAD_ROTATION_OVERDUE = 0.75


def _expiry_findings(entry: InventoryEntry, ctx: CheckContext, mesh_ca: MeshCa | None) -> Iterator[Finding]:
    cert = entry.cert
    args = _expiry_args(entry.what, cert.not_after, cert.not_before, ctx.now)
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


def _expiry_args(what: str, not_after: datetime, not_before: datetime | None, now: datetime) -> dict[str, str]:
    return {"what": what, "not_after": iso(not_after), "not_before": iso(not_before) if not_before else "",
            "ago": human_duration(now - not_after), "left": human_duration(not_after - now)}


# -- the mesh CA, read in istiod's order (commands/certificates/mesh_ca.py) ----------

def find_mesh_ca(ctx: CheckContext, inventory: CertificateInventory) -> list[Finding]:
    """Put the CA istiod signs with into the inventory (``inventory.mesh_ca``); returns what is wrong with it.

    Unparsable keys are MB3013, an incomplete cacerts MB3016, an unused leftover CA Secret MB3017.
    """
    snapshot = ctx.snapshot
    mesh_ca, unreadable = read_mesh_ca(snapshot)
    findings = [_unparsable(u.resource, u.key, u.reason) for u in unreadable]
    inventory.mesh_ca = mesh_ca
    if mesh_ca is None:
        return findings
    source = mesh_ca.source
    for root in mesh_ca.roots:
        inventory.add(root, role=CertRole.MESH_ROOT, origin=source.origin, reference=source.source,
                      remediation=_mesh_root_remediation(mesh_ca, root, ctx.now, snapshot.istio_namespace),
                      namespace=source.namespace)
    for cert in mesh_ca.signing:
        inventory.add(cert, role=CertRole.MESH_CA, origin=source.origin, reference=source.source,
                      remediation=_intermediate_remediation(mesh_ca, snapshot.istio_namespace),
                      namespace=source.namespace)
    if mesh_ca.missing:
        findings.append(_incomplete_bundle(mesh_ca))
    # An incomplete cacerts breaks every namespace, so it shows in any scope; an unused leftover only in its own.
    findings.extend(f for leftover in mesh_ca.ignored
                    if ctx.in_scope(leftover.namespace) and (f := _unused_ca_secret(leftover, mesh_ca, ctx)))
    return findings


def _unparsable(resource: Resource, key: str, reason: str) -> Finding:
    return codes.finding(
        "MB3013", origin=resource.origin, reference=resource.source, what=f"{key} of {resource.origin}",
        reason=reason, evidence={"key": key},
        remediation=Remediation(f"Replace {key} in {resource.origin} with PEM certificates"))


def _parse_key(resource: Resource, key: str, findings: list[Finding]) -> list[CertInfo] | None:
    """The certificates under ``key``; None when absent, or broken (then MB3013 is added to ``findings``)."""
    try:
        return certificates_in(resource, key)
    except CertificateError as exc:
        findings.append(_unparsable(resource, key, str(exc)))
        return None


def certificates_in(resource: Resource, key: str) -> list[CertInfo] | None:
    """The certificates under ``key`` of a ConfigMap (``data``) or Secret (base64 ``data``, or ``stringData``).

    None when the key is absent; CertificateError when it holds no readable certificate.
    """
    pem = pem_of(resource, key)
    return parse_pem_bundle(pem) if pem is not None else None


def _incomplete_bundle(mesh_ca: MeshCa) -> Finding:
    source, layout = mesh_ca.source, mesh_ca.layout or ISTIO_LAYOUT
    namespace = source.namespace or ""
    files = ", ".join(mesh_ca.missing)
    return codes.finding(
        "MB3016", origin=source.origin, reference=source.source, namespace=namespace, files=files,
        layout=layout.name,
        evidence={"layout": layout.name, "missing": list(mesh_ca.missing),
                  "expected": [layout.signing_cert, layout.signing_key, layout.roots, layout.chain[0]],
                  "roots_taken_from": mesh_ca.roots_from or layout.roots},
        # istio_ca.go checkCABundleCompleteness (Istio 1.27+): a partial bundle is an error, not a fallback.
        remediation=Remediation(
            f"Add {files} to cacerts: in the {layout.name} layout istiod needs {layout.signing_cert}, "
            f"{layout.signing_key}, {layout.roots} and {layout.chain[0]} (pilot/pkg/bootstrap/istio_ca.go "
            "checkCABundleCompleteness). Use the root that issued the current chain, so workloads keep "
            f"trusting each other ({ROTATION_DOCS}). Before Istio 1.27 a cacerts without its key file was "
            "ignored in favour of istio-ca-secret instead; the command lists the keys present without their values",
            command=f"kubectl -n {namespace} describe secret {PLUGGED_IN_SECRET}"))


def _unused_ca_secret(leftover: Resource, mesh_ca: MeshCa, ctx: CheckContext) -> Finding | None:
    """A CA Secret istiod does not read in this mode: its expiry is news only if it would have alarmed."""
    certs = _parse_key(leftover, ISTIO_LAYOUT.signing_cert, []) or []
    alarming = [c for c in certs if expiry_code(c.not_after, ctx.now, ctx.thresholds, not_before=c.not_before)]
    if not alarming:
        return None
    cert = alarming[0]
    state = (f"expired {human_duration(ctx.now - cert.not_after)} ago" if cert.not_after <= ctx.now
             else f"expires in {human_duration(cert.not_after - ctx.now)}")
    return codes.finding(
        "MB3017", origin=leftover.origin, reference=leftover.source, secret=leftover.name,
        subject=cert.subject, state=state, used=f"{mesh_ca.mode} ({mesh_ca.source.origin})",
        evidence={**cert.evidence(ctx.now), "used_instead": mesh_ca.source.origin},
        # istio_ca.go createIstioCA: with a complete cacerts istiod never loads istio-ca-secret.
        remediation=Remediation(
            f"No action needed while {mesh_ca.source.origin} is in use. Do not delete {mesh_ca.source.name} "
            f"expecting a fallback: istiod would go back to {leftover.name}'s root and workloads that trust "
            "the current root would fail mTLS until every one restarted"))


# -- expired and expiring roots in a bundle with several ------------------------------------

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
        successor=successor.subject, successor_not_after=iso(successor.not_after),
        evidence={**evidence, "anchored_by": successor.evidence(now)},
        # A peer accepts a chain ending at any root of its bundle (Envoy's trusted_ca holds them all),
        # so only the third step of a root rotation is left: drop the old root.
        remediation=Remediation(
            "Once every workload certificate chains to the new root (they renew within their 24 h lifetime), "
            "remove the old root from the trust bundle (root-cert.pem or ca.crt of cacerts) so it stops being "
            f"distributed; removing it earlier breaks mTLS for workloads still holding old certificates "
            f"({ROTATION_DOCS})"))


# -- what to do about the mesh CA ---------------------------------------------------------

# istiod's root rotator (security/pkg/pki/ca/selfsignedcarootcertrotator.go) renews once the root is inside
# the last CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE of its lifetime (default 20,
# security/pkg/cmd/constants.go DefaultRootCertGracePeriodPercentile), checking every
# CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL (default 1h); both are read in pilot/pkg/bootstrap/istio_ca.go.
DEFAULT_GRACE_PERCENTILE = 20
ROTATOR_CHECK_INTERVAL = "1h"


def rotator_grace_percentile(root: CertInfo, now: datetime) -> int:
    """The grace percentile that puts ``root`` inside the rotator's renewal window now (at least the default)."""
    lifetime = root.not_after - root.not_before
    if lifetime <= timedelta(0) or root.not_after <= now:
        return DEFAULT_GRACE_PERCENTILE
    needed = math.ceil((root.not_after - now) / lifetime * 100) + 1
    return min(max(needed, DEFAULT_GRACE_PERCENTILE), 99)


def _mesh_root_remediation(mesh_ca: MeshCa, root: CertInfo, now: datetime, istio_namespace: str) -> Remediation:
    if mesh_ca.mode == CaMode.SELF_SIGNED:
        return _self_signed_root_remediation(mesh_ca.source.name, root, now, istio_namespace)
    if mesh_ca.mode == CaMode.PLUGGED_IN:
        return _plugged_in_root_remediation(mesh_ca.layout or ISTIO_LAYOUT, istio_namespace)
    return _root_remediation(istio_namespace)


def _self_signed_root_remediation(secret: str, root: CertInfo, now: datetime, istio_namespace: str) -> Remediation:
    # Renewal keeps the key and the subject (util.GenRootCertFromExistingKey), so certificates signed by the
    # old root still verify against the new one and no workload needs a restart.  Deleting the Secret instead
    # makes istiod mint a new key and root (ca.go NewSelfSignedIstioCAOptions) and mTLS fails mesh-wide
    # until every workload has restarted.
    percentile = rotator_grace_percentile(root, now)
    return Remediation(
        f"istiod renews its self-signed root in place, from the same key: its root rotator re-issues ca-cert.pem "
        f"in {secret} once the root is in the last CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE "
        f"(default {DEFAULT_GRACE_PERCENTILE}%) of its lifetime or expired, checking every "
        "CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL (default 1h; 0 or less turns it off). Workload "
        "certificates keep verifying because the key and subject stay the same. This root was not renewed, so "
        "the rotator is off or failing: read istiod's log for rootcertrotator lines. The command turns it on "
        f"with a grace period that covers this root ({percentile}%) and rolls istiod (safe: workloads keep "
        "their certificates); put the same env in your install values (pilot.env) so an upgrade keeps it. "
        "Verify: ca-cert.pem's notAfter moved and its public key did not change, and istio-ca-root-cert in "
        f"every namespace shows the new root. Never delete {secret}: istiod would mint a new key and root, "
        "and mTLS would fail across the mesh until every workload restarted "
        "(security/pkg/pki/ca/selfsignedcarootcertrotator.go)",
        command=f"kubectl -n {istio_namespace} set env deployment/istiod -c discovery "
                f"CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL={ROTATOR_CHECK_INTERVAL} "
                f"CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE={percentile}")


def _plugged_in_root_remediation(layout: CaLayout, istio_namespace: str) -> Remediation:
    # istio_ca.go handleEvent: with ISTIO_MULTIROOT_MESH=true istiod reloads a root bundle that only adds or only
    # removes roots (pemBundleHasSubsetRelation); without it a root change waits for an istiod restart.
    return Remediation(
        f"istiod cannot extend a plugged-in root; rotate it with both roots trusted. 1) Put the new root next to "
        f"the old one in {layout.roots} and keep the current {layout.signing_cert}, {layout.signing_key} and "
        f"chain; with ISTIO_MULTIROOT_MESH=true istiod reloads a bundle that only adds roots, otherwise restart "
        "istiod. Wait until istio-ca-root-cert in every namespace holds both roots and workload certificates "
        f"have renewed (24 h). 2) Replace {layout.signing_cert}, {layout.signing_key} and the chain with an "
        "intermediate issued by the new root, keeping both roots, and wait for another renewal. 3) Remove the "
        "old root. Replacing the root in one step breaks mTLS between workloads holding certificates from "
        f"different roots until all of them restart ({ROTATION_DOCS}; pilot/pkg/bootstrap/istio_ca.go handleEvent)",
        command=_cacerts_apply_command(layout, istio_namespace))


def _intermediate_remediation(mesh_ca: MeshCa, istio_namespace: str) -> Remediation:
    layout = mesh_ca.layout or ISTIO_LAYOUT
    # istio_ca.go handleEvent: istiod watches the mounted cacerts files and reloads a new intermediate that
    # chains to the unchanged root (older releases needed AUTO_RELOAD_PLUGIN_CERTS or a restart).
    return Remediation(
        f"Issue a new intermediate from the same root and replace {layout.signing_cert}, {layout.signing_key} "
        f"and the chain in cacerts, leaving {layout.roots} unchanged. istiod watches the mounted files and "
        "reloads an intermediate that chains to its current root without a restart (older releases: restart "
        "istiod); workloads keep trusting the unchanged root and get certificates from the new intermediate "
        f"at their next renewal, so none needs a restart ({ROTATION_DOCS})",
        command=_cacerts_apply_command(layout, istio_namespace))


def _cacerts_apply_command(layout: CaLayout, istio_namespace: str) -> str:
    files = " ".join(f"--from-file={f}" for f in dict.fromkeys(
        (layout.signing_cert, layout.signing_key, *layout.chain, layout.roots)))
    secret_type = " --type=kubernetes.io/tls" if layout is TLS_LAYOUT else ""
    return (f"kubectl -n {istio_namespace} create secret generic {PLUGGED_IN_SECRET}{secret_type} {files} "
            "--dry-run=client -o yaml | kubectl apply -f -")


def _root_remediation(istio_namespace: str) -> Remediation:
    """For a root seen without its CA Secret (the ConfigMap, Envoy, istiod's metrics)."""
    return Remediation(
        "Rotate the mesh root in place. Self-signed (istio-ca-secret): istiod's root rotator renews it from the "
        "same key, so workloads keep trusting it; if it has not, it is off or failing (check "
        "CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL and istiod's rootcertrotator log). Plugged-in (cacerts): "
        "add the new root next to the old one, then switch the intermediate, then drop the old root "
        f"({ROTATION_DOCS}). Never delete istio-ca-secret: a new key and root break mTLS mesh-wide until every "
        "workload restarts. The command shows which CA Secret istiod uses",
        command=f"kubectl -n {istio_namespace} get secrets {PLUGGED_IN_SECRET} {SELF_SIGNED_SECRET} "
                "--ignore-not-found -o name")


# -- istio-ca-root-cert in every namespace -------------------------------------------

def _root_configmaps(ctx: CheckContext, mesh_ca: MeshCa | None, inventory: CertificateInventory) -> Iterator[Finding]:
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
        if mesh_ca is None or problems or configmap is mesh_ca.source:
            continue
        yield from _compare_with_mesh(configmap, mesh_ca, found, ctx.now)
    yield from _missing_root_configmaps(ctx, with_configmap)


def _compare_with_mesh(configmap: Resource, mesh_ca: MeshCa, found: list[CertInfo], now: datetime) -> Iterator[Finding]:
    """MB3010 when the namespace lacks every current root; MB3019 when it lacks only some valid ones.

    istiod writes its whole bundle into every namespace (namespacecontroller.go reconcileCACertAndCRL), so
    during a rotation the copies hold old + new roots; a copy is usable while it holds a root trust rests on.
    """
    held = fingerprints(found)
    current = mesh_ca.current_roots(now)
    if not current & held:
        yield _root_mismatch(configmap, mesh_ca, found, sorted(current))
        return
    valid = {r.fingerprint for r in mesh_ca.roots if r.not_before <= now < r.not_after}
    lacking = sorted(valid - held)
    if lacking:
        yield _root_bundle_partial(configmap, mesh_ca, found, lacking)


def _found_evidence(found: list[CertInfo]) -> list[dict[str, str]]:
    return [{"subject": c.subject, "fingerprint": c.fingerprint, "not_after": iso(c.not_after)} for c in found]


def _root_mismatch(configmap: Resource, mesh_ca: MeshCa, found: list[CertInfo], expected: list[str]) -> Finding:
    namespace = configmap.namespace or ""
    return codes.finding(
        "MB3010", origin=configmap.origin, reference=configmap.source, namespace=namespace,
        expected=", ".join(expected),
        evidence={"mesh_root_source": mesh_ca.source.origin, "expected_fingerprints": expected,
                  "found": _found_evidence(found)},
        # istiod upserts this ConfigMap on every change or deletion (pilot/pkg/serviceregistry/kube/controller/
        # namespacecontroller.go), so a foreign root that stays means another writer or a namespace istiod
        # does not watch (discoverySelectors).
        remediation=Remediation(
            "istiod writes istio-ca-root-cert into every namespace it watches and rewrites it on any change; a "
            "foreign root that stays means a second control plane writes it or istiod does not watch this "
            "namespace (discoverySelectors). Fix that, then delete the copy so istiod recreates it; proxies "
            "that still show the foreign root (istioctl proxy-config secret) need a restart",
            command=f"kubectl -n {namespace} delete configmap {ROOT_CONFIGMAP}"))


def _root_bundle_partial(configmap: Resource, mesh_ca: MeshCa, found: list[CertInfo], lacking: list[str]) -> Finding:
    namespace = configmap.namespace or ""
    return codes.finding(
        "MB3019", origin=configmap.origin, reference=configmap.source, namespace=namespace,
        lacking=", ".join(lacking),
        evidence={"mesh_root_source": mesh_ca.source.origin, "lacking_fingerprints": lacking,
                  "found": _found_evidence(found)},
        remediation=Remediation(
            "istiod has not rewritten this namespace's copy since the trust bundle changed (it upserts it on "
            "every change, pilot/pkg/serviceregistry/kube/controller/namespacecontroller.go): check istiod's "
            "log for the namespace, or delete the copy so istiod recreates it with the whole bundle",
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
            # namespacecontroller.go creates it for every watched namespace; a rolling istiod restart resyncs
            # and leaves workloads and their certificates alone.
            remediation=Remediation(
                "istiod's namespace controller writes this ConfigMap; check istiod's log for errors about the "
                "namespace and whether discoverySelectors leave it out, then restart istiod to resync",
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
                          remediation=_root_remediation(ctx.snapshot.istio_namespace),
                          namespace=target.namespace, dependent=origin)


def _workload_remediation(target: PodRef) -> Remediation:
    # istio-agent renews at SECRET_GRACE_PERIOD_RATIO of the lifetime and asks for a fresh certificate when the pod
    # starts (pilot/cmd/pilot-agent/options/options.go, security/pkg/nodeagent/cache/secretcache.go); deleting
    # the one pod lets its controller replace it and touches nothing else.
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
    remediation = _root_remediation(ctx.snapshot.istio_namespace)
    code = expiry_code(not_after, ctx.now, ctx.thresholds)
    if code is None:
        when = f"on {iso(not_after)} (in {human_duration(not_after - ctx.now)})"
        return codes.finding("MB3015", origin=origin, what=what, when=when, evidence=evidence)
    return codes.finding(code, origin=origin, evidence=evidence, remediation=remediation,
                         **_expiry_args(f"{what[0].upper()}{what[1:]} (per istiod)", not_after, None, ctx.now))

