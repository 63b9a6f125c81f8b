"""The mesh CA istiod signs with (read in istiod's order by commands/certificates/mesh_ca.py) and what to do about it."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from commands import codes
from commands.certificates.inventory import CertificateInventory, CertRole
from commands.certificates.mesh_ca import (
    ISTIO_LAYOUT,
    PLUGGED_IN_SECRET,
    SELF_SIGNED_SECRET,
    TLS_LAYOUT,
    CaLayout,
    CaMode,
    MeshCa,
    pem_of,
    read_mesh_ca,
)
from commands.certificates.x509 import CertificateError, CertInfo, expiry_code, parse_pem_bundle
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Resource
from commands.findings import Finding, Remediation
from commands.times import human_duration

ROTATION_DOCS = "https://istio.io/latest/docs/tasks/security/cert-management/plugin-ca-cert/"


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


def parse_key(resource: Resource, key: str, findings: list[Finding]) -> list[CertInfo] | None:
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
    certs = parse_key(leftover, ISTIO_LAYOUT.signing_cert, []) or []
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

# istiod's root rotator (security/pkg/pki/ca/selfsignedcarootcertrotator.go, checkAndRotateRootCertForSigningCertCitadel)
# renews once the root is inside the last CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE of its lifetime or
# expired (default 20, security/pkg/cmd/constants.go), on a ticker of CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL
# (default 1h; 0 or less turns it off; Istio suggests at least 10 minutes) that starts after a random jitter below
# that interval unless CITADEL_ENABLE_JITTER_FOR_ROOT_CERT_ROTATOR=false (all read in pilot/pkg/bootstrap/
# istio_ca.go).  Setting the defaults again changes nothing: forcing a renewal means a short interval without
# jitter, so the first check runs that long after istiod starts.
DEFAULT_GRACE_PERCENTILE = 20
FORCED_CHECK_INTERVAL = "10m"


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
    return root_remediation(istio_namespace)


def _self_signed_root_remediation(secret: str, root: CertInfo, now: datetime, istio_namespace: str) -> Remediation:
    # Renewal keeps the key and the subject (util.GenRootCertFromExistingKey), so certificates signed by the
    # old root still verify against the new one and no workload needs a restart.  Deleting the Secret instead
    # makes istiod mint a new key and root (ca.go NewSelfSignedIstioCAOptions) and mTLS fails mesh-wide
    # until every workload has restarted.
    percentile = rotator_grace_percentile(root, now)
    window = (f" CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE={percentile}"
              if percentile > DEFAULT_GRACE_PERCENTILE else "")
    return Remediation(
        f"istiod renews its self-signed root in place, from the same key: a Ready istiod's root rotator re-issues "
        f"ca-cert.pem in {secret} once the root is in the last {DEFAULT_GRACE_PERCENTILE}% of its lifetime or "
        "expired, checking every CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL (default 1h, first check after a "
        "random jitter below it). This root was not renewed, so istiod was not running, or the rotator is off "
        "(interval 0 or less in the install values) or failing (istiod's log: rootCertRotator lines). Once istiod "
        "is Ready, the command forces a check 10 minutes after istiod restarts (interval 10m, no jitter"
        + (f", and a grace period covering this root: {percentile}%" if window else "")
        + "); it rolls istiod, which is safe for workloads (they keep their certificates). Verify: ca-cert.pem's "
        "notAfter moved and its public key did not change, and istio-ca-root-cert in every namespace shows the "
        "new root; then put the env back to your install's values. Never delete "
        f"{secret}: istiod would mint a new key and root, and mTLS would fail across the mesh until every "
        "workload restarted (security/pkg/pki/ca/selfsignedcarootcertrotator.go, pilot/pkg/bootstrap/istio_ca.go)",
        command=f"kubectl -n {istio_namespace} set env deployment/istiod -c discovery "
                f"CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL={FORCED_CHECK_INTERVAL} "
                f"CITADEL_ENABLE_JITTER_FOR_ROOT_CERT_ROTATOR=false{window}")


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


def root_remediation(istio_namespace: str) -> Remediation:
    """For a root seen without its CA Secret (the ConfigMap, Envoy, istiod's metrics)."""
    return Remediation(
        "Rotate the mesh root in place. Self-signed (istio-ca-secret): istiod's root rotator renews it from the "
        "same key, so workloads keep trusting it; if it has not, istiod was not running or the rotator is off or "
        "failing (CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL, istiod's rootCertRotator log). Plugged-in (cacerts): "
        "add the new root next to the old one, then switch the intermediate, then drop the old root "
        f"({ROTATION_DOCS}). Never delete istio-ca-secret: a new key and root break mTLS mesh-wide until every "
        "workload restarts. The command shows which CA Secret istiod uses",
        command=f"kubectl -n {istio_namespace} get secrets {PLUGGED_IN_SECRET} {SELF_SIGNED_SECRET} "
                "--ignore-not-found -o name")
