"""The ``certs`` check: the mesh root CA, each namespace's root ConfigMap, gateway TLS secrets,
workload certificates loaded in Envoy, and the CA expiry istiod reports.

One module per source of certificates (``mesh_ca``, ``root_configmaps``, ``gateways``,
``workloads``, ``istiod``), ``expiry`` for when a certificate is worth a finding, and
``check`` for the check itself.  Every certificate is reported once (by fingerprint) with
the places that depend on it.  Only public fields are kept: sources strip keys from
Secrets, and ``CertInfo`` holds nothing secret.
"""

from commands.checks.certs.check import certificate_inventory, certs

__all__ = ["certificate_inventory", "certs"]
