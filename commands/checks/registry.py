"""The check registry and the runner that turns a source into findings.

A check is a plain function ``(CheckContext) -> list[Finding]`` registered with
``@check(name, kinds=...)``; ``kinds`` says which objects the snapshot must hold,
so a live run lists only what the chosen checks read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from commands import codes
from commands.cluster.endpoints import EndpointResolver
from commands.errors import MeshbotError, UserError
from commands.findings import Finding, by_severity
from commands.cluster.snapshot import Snapshot, SnapshotSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thresholds:
    cert_error_days: int = 7
    cert_warning_days: int = 30
    cert_info_days: int = 90
    restart_warning: int = 3
    memory_near_limit_ratio: float = 0.9
    envoy_memory_warning_mb: int = 300
    envoy_memory_error_mb: int = 500
    upstream_503_share: float = 0.10
    retry_share: float = 0.20
    min_requests: int = 20
    """Clusters with fewer requests are too quiet for a share to mean anything."""
    stats_count_warning: int = 50_000


@dataclass
class CheckContext:
    snapshot: Snapshot
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    namespace: str | None = None
    """Only report on this namespace (the whole snapshot is still read for references)."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    endpoints: EndpointResolver | None = None

    def in_scope(self, namespace: str | None) -> bool:
        return self.namespace is None or namespace == self.namespace


CheckFunction = Callable[[CheckContext], list[Finding]]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    function: CheckFunction
    kinds: tuple[str, ...]
    summary: str


CHECKS: dict[str, CheckSpec] = {}
CHECK_ORDER = ("status", "proxy-status", "certs", "envoy", "analyze")


def check(name: str, *, kinds: Iterable[str], summary: str) -> Callable[[CheckFunction], CheckFunction]:
    def register(function: CheckFunction) -> CheckFunction:
        CHECKS[name] = CheckSpec(name, function, tuple(kinds), summary)
        return function
    return register


def load_checks() -> None:
    """Import every check module so its ``@check`` registration runs."""
    from commands import analyze
    from commands.checks import certs
    from commands.checks import envoy
    from commands.checks import status as health
    from commands.checks import proxy_status  # noqa: F401


def resolve_names(requested: Sequence[str]) -> list[str]:
    """``all`` expands to every check; unknown names are a UserError listing the valid ones."""
    load_checks()
    names: list[str] = []
    for name in requested:
        expanded = [n for n in CHECK_ORDER if n in CHECKS] if name == "all" else [name]
        for item in expanded:
            if item not in CHECKS:
                raise UserError(f"unknown check {item!r}; choose from: {', '.join(CHECK_ORDER)}, all")
            if item not in names:
                names.append(item)
    return names


def kinds_for(names: Iterable[str]) -> set[str]:
    load_checks()
    return {kind for name in names for kind in CHECKS[name].kinds}


def run_check(name: str, ctx: CheckContext) -> list[Finding]:
    """One check; its own failures become findings so the other checks still report."""
    if name not in CHECKS:
        load_checks()
    spec = CHECKS[name]
    try:
        return list(spec.function(ctx))
    except MeshbotError as exc:
        return [codes.finding("MB0004", check=name, origin=f"check {name}", check_name=name, reason=str(exc))]
    except Exception as exc:  # a bug must not hide the other checks' findings
        log.exception("check %s failed", name)
        return [codes.finding("MB0005", check=name, origin=f"check {name}", check_name=name,
                              reason=f"{type(exc).__name__}: {exc}")]


def diagnose(names: Sequence[str], source: SnapshotSource, *, namespace: str | None = None,
             now: datetime | None = None, thresholds: Thresholds | None = None,
             endpoints: EndpointResolver | None = None) -> list[Finding]:
    """Read what the checks need from ``source`` once, run them, return findings most severe first."""
    names = resolve_names(names)
    snapshot = source.snapshot(kinds_for(names))
    ctx = CheckContext(snapshot=snapshot, now=now or datetime.now(timezone.utc), namespace=namespace,
                       thresholds=thresholds or Thresholds(), endpoints=endpoints)
    findings = [f for f in snapshot.read_problems]
    for name in names:
        findings.extend(run_check(name, ctx))
    return by_severity(findings)
