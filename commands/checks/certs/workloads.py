"""Workload certificates as Envoy loaded them (its admin ``/certs``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from commands import codes
from commands.certificates.inventory import CertificateInventory, CertRole, LoadedCert
from commands.checks.certs.mesh_ca import root_remediation
from commands.checks.envoy import admin_unreachable
from commands.checks.registry import CheckContext
from commands.errors import MeshbotError
from commands.findings import Finding, Remediation
from commands.resources.references import PodRef
from commands.times import parse_rfc3339

CERTS_PATH = "/certs"


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
        not_after = parse_rfc3339(details["expiration_time"])
        not_before = parse_rfc3339(details["valid_from"]) if details.get("valid_from") else None
        serial = format(int(details.get("serial_number") or "0", 16), "x")
    except (KeyError, TypeError, ValueError):
        return
    sans = tuple(str(v) for san in details.get("subject_alt_names") or [] for v in san.values())
    into.setdefault(serial, LoadedCert(serial=serial, sans=sans, not_before=not_before, not_after=not_after))


def workload_certificates(ctx: CheckContext, inventory: CertificateInventory) -> Iterator[Finding]:
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
                          remediation=root_remediation(ctx.snapshot.istio_namespace),
                          namespace=target.namespace, dependent=origin)


def _workload_remediation(target: PodRef) -> Remediation:
    # istio-agent renews at SECRET_GRACE_PERIOD_RATIO of the lifetime and asks for a fresh certificate when the pod
    # starts (pilot/cmd/pilot-agent/options/options.go, security/pkg/nodeagent/cache/secretcache.go); deleting
    # the one pod lets its controller replace it and touches nothing else.
    return Remediation(
        "istio-agent renews workload certificates from istiod long before they expire; an old or missing one "
        "means it cannot reach the CA. Check istiod's CA (its log, the root CA expiry), then restart the pod",
        command=f"kubectl -n {target.namespace} delete pod {target.name}")
