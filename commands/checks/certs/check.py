"""The ``certs`` check itself: every source's certificates into one inventory, then their expiry."""

from __future__ import annotations

from commands.certificates.inventory import CertificateInventory, InventoryEntry
from commands.checks.certs.expiry import expiry_findings
from commands.checks.certs.gateways import gateway_credentials, other_tls_secrets
from commands.checks.certs.istiod import istiod_ca_expiry
from commands.checks.certs.mesh_ca import find_mesh_ca
from commands.checks.certs.root_configmaps import root_configmaps
from commands.checks.certs.workloads import workload_certificates
from commands.checks.registry import CheckContext, check
from commands.findings import Finding


@check("certs", kinds=("Secret", "ConfigMap", "Gateway", "Pod", "Namespace"),
       summary="mesh root CA, istio-ca-root-cert in every namespace, gateway TLS secrets, workload certificates")
def certs(ctx: CheckContext) -> list[Finding]:
    inventory = CertificateInventory()
    findings = _add_long_lived(ctx, inventory)
    findings.extend(workload_certificates(ctx, inventory))
    expiry = [f for entry in inventory.entries() if _in_scope(entry, ctx)
              for f in expiry_findings(entry, ctx, inventory.mesh_ca)]
    findings.extend(expiry)
    findings.extend(istiod_ca_expiry(ctx, {entry.cert.not_after for entry in inventory.entries()}))
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
    findings.extend(root_configmaps(ctx, inventory.mesh_ca, inventory))
    findings.extend(gateway_credentials(ctx, inventory))
    other_tls_secrets(ctx, inventory)
    return findings


def _in_scope(entry: InventoryEntry, ctx: CheckContext) -> bool:
    return ctx.namespace is None or ctx.namespace in entry.namespaces
