"""Webhooks of a remote cluster that reach istiod in an external control plane (IST0163, IST0164).

With an external control plane the injector and validator webhooks carry a ``url`` instead of a
Service; a blank or unparsable one fails every pod creation in injected namespaces (the injector
fails closed).  Follows istio/istio
pkg/config/analysis/analyzers/externalcontrolplane/externalcontrolplane.go.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from commands.analyze import analyzer, report
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Resource
from commands.findings import Finding
from commands.shapes import mapping, mappings

# The names Istio's charts give these configurations (istio-validator[-<rev>]-<ns>,
# istiod-default-validator, istio-sidecar-injector[-<rev>][-<ns>]).
DEFAULT_VALIDATOR = "istiod-default-validator"
VALIDATOR_PREFIX, INJECTOR_PREFIX = "istio-validator", "istio-sidecar-injector"


def istio_configurations(ctx: CheckContext) -> Iterator[Resource]:
    for validator in ctx.snapshot.of_kind("ValidatingWebhookConfiguration"):
        if validator.name == DEFAULT_VALIDATOR or validator.name.startswith(VALIDATOR_PREFIX):
            yield validator
    for injector in ctx.snapshot.of_kind("MutatingWebhookConfiguration"):
        if injector.name.startswith(INJECTOR_PREFIX):
            yield injector


@analyzer("externalcontrolplane.ExternalControlPlaneAnalyzer",
          inputs=("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"))
def external_control_plane(ctx: CheckContext) -> list[Finding]:
    """IST0163 for a blank or invalid webhook URL (or neither URL nor Service); IST0164 for an IP address."""
    findings: list[Finding] = []
    for configuration in istio_configurations(ctx):
        for hook in mappings(configuration.body.get("webhooks")):
            finding = _lint(configuration, str(hook.get("name") or ""), mapping(hook.get("clientConfig")))
            if finding is not None:
                findings.append(finding)
    return findings


def _lint(configuration: Resource, webhook: str, client: Mapping[str, Any]) -> Finding | None:
    url = client.get("url")
    if url is None:
        if client.get("service") is None:
            return report("IST0163", configuration, hostname="", webhook=webhook, problem="is blank")
        return None
    try:
        parts = urlsplit(str(url))
        _ = parts.port  # urlsplit checks the port only when it is read; Go's url.Parse does at once
    except ValueError:
        return report("IST0163", configuration, hostname=url, webhook=webhook,
                      problem="was provided in an invalid format")
    try:
        ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        return None
    return report("IST0164", configuration, hostname=url, webhook=webhook)
