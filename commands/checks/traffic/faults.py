"""VirtualService fault injection left on: routes whose sidecars abort (flag FI) or delay (flag DI) requests.

Istio turns ``http[].fault`` into Envoy's HTTP fault filter on the route (istio/istio
pilot/pkg/networking/core/route/route.go ``TranslateFault``); the sidecar then answers the error itself, so the
destination never sees the request and its own metrics look healthy.  Only ``percentage.value`` sets how many
requests: "If not specified, no request will be aborted" / "delayed"
(https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPFaultInjection-Abort), and
``TranslateFault`` reads nothing else (the deprecated integer ``delay.percent`` is ignored).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from commands import codes
from commands.cluster.snapshot import Resource
from commands.findings import Finding, Remediation


def fault_findings(virtual_service: Resource) -> Iterator[Finding]:
    """One finding per route whose fault aborts or delays some share of its requests."""
    hosts = ", ".join(str(h) for h in virtual_service.spec.get("hosts") or ()) or "its hosts"
    for index, route in enumerate(virtual_service.spec.get("http") or ()):
        fault = route.get("fault") or {}
        if not isinstance(fault, Mapping):
            continue
        label = str(route.get("name") or f"http[{index}]")
        match = _match_text(route.get("match") or ())
        fields = {"virtual_service": virtual_service.origin, "hosts": hosts, "route": label}
        evidence = {"route": label, "fault": dict(fault), "match": list(route.get("match") or ())}
        abort = fault.get("abort") or {}
        if (share := percentage(abort)) > 0:
            status = abort.get("httpStatus") or abort.get("grpcStatus") or abort.get("http2Error") or "error"
            code, extra = ("MB5002", {"match": match}) if match else ("MB5001", {})
            yield codes.finding(code, origin=virtual_service.origin, reference=virtual_service.source,
                                percent=_percent(share), status=status, evidence=evidence,
                                remediation=_remove_fault(virtual_service, label, "abort"), **fields, **extra)
        delay = fault.get("delay") or {}
        if (share := percentage(delay)) > 0:
            yield codes.finding("MB5003", origin=virtual_service.origin, reference=virtual_service.source,
                                percent=_percent(share), delay=delay.get("fixedDelay") or "a delay",
                                matching=f" matching {match}" if match else "", evidence=evidence,
                                remediation=_remove_fault(virtual_service, label, "delay"), **fields)


def percentage(fault: Mapping[str, Any]) -> float:
    """The share of requests (0-100) a fault applies to; 0 when ``percentage`` is absent, as istiod reads it."""
    share = fault.get("percentage")
    value = share.get("value") if isinstance(share, Mapping) else None
    try:
        return max(0.0, min(float(value), 100.0)) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def _percent(share: float) -> str:
    return f"{share:g}%"


def _match_text(matches: Any) -> str:
    """``headers end-user, uri /test``: what limits the route, so the finding says who is affected."""
    parts = []
    for match in matches if isinstance(matches, list) else ():
        for key, value in (match or {}).items():
            if key == "name":
                continue
            detail = ", ".join(value) if isinstance(value, Mapping) and key in ("headers", "queryParams") else ""
            parts.append(f"{key} {detail}".strip() if detail else str(key))
    return "; ".join(dict.fromkeys(parts))


def _remove_fault(virtual_service: Resource, route: str, kind: str) -> Remediation:
    # Fault injection is a test tool (istio.io/latest/docs/tasks/traffic-management/fault-injection/, whose
    # cleanup deletes the rule); removing it changes nothing else on the route. Read it first: a chaos
    # experiment may be running on purpose.
    return Remediation(
        f"Confirm nobody is running a fault-injection test, then remove fault.{kind} from route {route} of "
        f"{virtual_service.origin} (the rest of the route stays as it is)",
        command=f"kubectl -n {virtual_service.namespace} get virtualservice {virtual_service.name} -o yaml")
