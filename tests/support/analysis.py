"""Run analyzers on YAML text: the shortest path from a test case to its findings."""

from __future__ import annotations

import textwrap

from commands.analyze import run_analyzers
from commands.checks.registry import CheckContext
from commands.cluster.snapshot import Snapshot
from commands.cluster.sources.files import parse_objects
from commands.findings import Finding


def snapshot_from_yaml(text: str, *, istio_namespace: str = "istio-system") -> Snapshot:
    return Snapshot(parse_objects(textwrap.dedent(text), "case.yaml"), istio_namespace=istio_namespace)


def analyze_yaml(text: str, *, namespace: str | None = None) -> list[Finding]:
    """Every analyzer's findings for the objects in ``text`` (a multi-document YAML string)."""
    return run_analyzers(CheckContext(snapshot=snapshot_from_yaml(text), namespace=namespace))


def with_code(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]
