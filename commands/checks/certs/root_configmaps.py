"""``istio-ca-root-cert`` in every namespace, compared with the mesh CA's roots."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from commands import codes
from commands.certificates.inventory import CertificateInventory
from commands.certificates.mesh_ca import ROOT_CONFIGMAP, ROOT_CONFIGMAP_KEY, MeshCa
from commands.certificates.x509 import CertInfo, fingerprints
from commands.checks.certs.mesh_ca import parse_key
from commands.checks.registry import CheckContext
from commands.cluster.pods import sidecar_spec
from commands.cluster.snapshot import Resource
from commands.findings import Finding, Remediation
from commands.times import rfc3339


def root_configmaps(ctx: CheckContext, mesh_ca: MeshCa | None, inventory: CertificateInventory) -> Iterator[Finding]:
    snapshot = ctx.snapshot
    with_configmap = set()
    for configmap in snapshot.of_kind("ConfigMap"):
        if configmap.name != ROOT_CONFIGMAP or not configmap.namespace:
            continue
        namespace = configmap.namespace
        with_configmap.add(namespace)
        problems: list[Finding] = []
        found = parse_key(configmap, ROOT_CONFIGMAP_KEY, problems) or []
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
    return [{"subject": c.subject, "fingerprint": c.fingerprint, "not_after": rfc3339(c.not_after)} for c in found]


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
