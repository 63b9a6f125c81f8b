"""Fixtures for the real parts meshbot is tested against (see ../shared/TESTING.md).

Each outside system has one support module under ``tests/support``; they are
registered here as plugins so every test can ask for their fixtures by name.
"""

pytest_plugins = [
    "tests.support.kube",
    "tests.support.envoy",
    "tests.support.istiod",
    "tests.support.slack",
    "tests.support.bot",
    "tests.support.alertmanager",
    "tests.support.postgres",  # a real PostgreSQL server (session) and the both-backends database fixture
    "tests.support.prometheus",  # a real Prometheus on a TSDB backfilled with Istio's metrics (session)
    "tests.support.ordering",  # the slowest files first, module-fixture users grouped (for pytest-xdist)
]
