"""A diagnosis runner that holds every diagnosis until released, so a test decides when turns end."""

from __future__ import annotations

import threading
from typing import Any

from commands.findings import Finding

HELD_SECONDS = 20
"""A ceiling, not a wait: every test releases the gate itself, this only ends a turn a failed test left held."""


class DiagnosisGate:
    """Pass as the runner (``build(runner=...)``, ``Diagnostician(runner=...)``); ``started`` lists the namespace
    of each diagnosis that began, in order."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str | None] = []

    def __call__(self, checks: Any, namespace: str | None, pods: Any = ()) -> list[Finding]:
        self.started.append(namespace)
        self.release.wait(HELD_SECONDS)
        return []
