"""Which checks meshbot runs, in the order they report: adding a check is one line here.

The CLI's choices, ``/mesh`` subcommands and their help, and the check names a
playbook may use are all read from this registry.
"""

from __future__ import annotations

from commands.analyze import analyze
from commands.checks.certs import certs
from commands.checks.envoy import envoy
from commands.checks.proxy_status import proxy_status
from commands.checks.registry import CheckRegistry
from commands.checks.status import status
from commands.checks.traffic import traffic_policy


def default_checks() -> CheckRegistry:
    return CheckRegistry([
        status,
        proxy_status,
        certs,
        envoy,
        traffic_policy,
        analyze,
    ])
