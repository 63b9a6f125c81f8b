"""The long-lived certificates a mesh depends on, each once (by fingerprint) with who depends on it.

The model the ``certs`` check fills and the reminders read; it holds public certificate facts only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from commands.certificates.mesh_ca import MeshCa
from commands.certificates.x509 import CertInfo, days_left
from commands.findings import Remediation
from commands.times import rfc3339


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
                "not_before": rfc3339(self.not_before) if self.not_before else None,
                "not_after": rfc3339(self.not_after), "days_left": days_left(self.not_after, now)}


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
        self.mesh_ca: MeshCa | None = None
        """The CA istiod signs with, once ``find_mesh_ca`` has run."""

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
