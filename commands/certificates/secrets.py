"""Keep only the public part of a Secret: certificates, never keys or tokens.

Applied by every source the moment a Secret is read, so private keys never
reach a check, a finding, a log line, the database or Slack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Data keys that hold certificates in the Secrets meshbot reads: kubernetes.io/tls
# (tls.crt, ca.crt), Istio generic credentials (cert, cacert), istio-ca-secret and
# plugged-in cacerts (ca-cert.pem, root-cert.pem, cert-chain.pem).
CERTIFICATE_KEYS = frozenset({
    "tls.crt", "ca.crt", "cert", "cacert", "ca-cert.pem", "root-cert.pem", "cert-chain.pem",
})
# istiod writes an empty ``istio-generated`` key into a cacerts it created itself (security/pkg/pki/ca/ca.go
# BuildSecret); its presence tells a self-signed CA from a plugged-in one, and it holds nothing secret.
MARKER_KEYS = frozenset({"istio-generated"})
KEPT_KEYS = CERTIFICATE_KEYS | MARKER_KEYS


def public_secret(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a Secret object whose ``data``/``stringData`` hold certificate keys only."""
    out = dict(obj)
    for section in ("data", "stringData"):
        values = obj.get(section)
        if isinstance(values, Mapping):
            out[section] = {k: (v if k in CERTIFICATE_KEYS else "") for k, v in values.items() if k in KEPT_KEYS}
    metadata = dict(obj.get("metadata") or {})
    annotations = dict(metadata.get("annotations") or {})
    # kubectl apply stores the whole object, keys included, in this annotation.
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if annotations or "annotations" in metadata:
        metadata["annotations"] = annotations
    metadata.pop("managedFields", None)
    out["metadata"] = metadata
    return out
