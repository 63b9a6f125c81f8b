"""The slowest test files run first, so pytest-xdist's four workers finish together.

xdist's ``load`` scheduling hands out the collected tests in order, round-robin at the start and then to
whichever worker is free.  In collection (alphabetical) order a file of one-to-four-minute tests (real
``meshbot serve`` fleets on PostgreSQL, the browser walks) could start last and run alone while the other
workers idle; started first, their minutes overlap the thousands of sub-second tests instead (longest job
first).  The order of the tests inside a file and of every other file is unchanged.

scripts/test.sh runs ``--dist loadgroup --no-loadscope-reorder``: every test is its own unit, handed to the
next free worker in this order, except that the tests sharing a module-scoped fixture (one checkov run, one
kustomize rendering, one backfilled Prometheus) form one group, so that fixture is built once, not on every
worker.
"""

from __future__ import annotations

import fnmatch

import pytest

SLOWEST_FIRST = (
    # Measured one file at a time with ``-n 0 --durations`` (2026-12-07): per test, a minute or more.
    "test_ha_approvals.py",  # twenty approvals on three replicas (~4 min), two takeovers
    "test_demo_console.py",  # the browser walks (1-2.5 min each)
    "test_faults.py",  # SIGSTOP'd executor, a clock five minutes ahead (1-1.5 min each)
    "test_ha_replicas.py",  # the alert storm on three replicas
    "test_faults_sqlite.py",  # a second ``meshbot serve`` process
    "test_ha_reminders.py",
    # Many tests of several seconds each: a real Envoy (plus upstreams) per test.
    "test_envoy_flags.py",
    "test_envoy.py",
)


def _rank(item: pytest.Item) -> int:
    name = item.path.name
    return next((rank for rank, pattern in enumerate(SLOWEST_FIRST) if fnmatch.fnmatch(name, pattern)),
                len(SLOWEST_FIRST))


def _module_fixtures(item: pytest.Item) -> bool:
    # What pytest resolved at collection: the last definition of each name is the one the test gets.
    definitions = getattr(item, "_fixtureinfo", None)
    return definitions is not None and any(
        defs and defs[-1].scope == "module" for defs in definitions.name2fixturedefs.values())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A stable sort: every worker computes the same order, as xdist requires.
    items.sort(key=_rank)
    for item in items:
        if _module_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.path.name))
