"""The ``traffic-policy`` check: fault injection left on, DestinationRule TLS modes that break connections, and
several DestinationRules for one host.

``faults``, ``tls_modes`` and ``rule_precedence`` hold one rule family each, ``peer_authentication`` the mode a pod
accepts, and ``check`` the check itself.
"""

from commands.checks.traffic.check import traffic_policy

__all__ = ["traffic_policy"]
