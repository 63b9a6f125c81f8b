"""A stand-in for istiod's monitoring port (:15014): ``/debug/syncz`` JSON and ``/metrics`` text over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.http_server import ProgrammableServer, start_server


@pytest.fixture
def istiod_server() -> Iterator[ProgrammableServer]:
    """An HTTP server tests program with ``istiod_server.answer("/debug/syncz", [...])``."""
    state, server = start_server()
    yield state
    server.shutdown()
    server.server_close()


def syncz_entry(proxy: str, *, version: str = "1.22.3", synced: bool = True, **fields: str) -> dict:
    """One SyncStatus entry; all four main xDS types synced unless ``fields`` say otherwise."""
    entry: dict = {"cluster_id": "Kubernetes", "proxy": proxy, "proxy_type": "sidecar", "istio_version": version}
    if synced:
        for prefix in ("cluster", "listener", "route", "endpoint"):
            entry[f"{prefix}_sent"] = entry[f"{prefix}_acked"] = f"{prefix}-nonce-1"
    entry.update(fields)
    return entry
