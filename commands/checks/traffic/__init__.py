"""The ``traffic-policy`` check: fault injection left on and DestinationRule TLS modes that break connections.

``faults`` and ``tls_modes`` hold one rule family each, ``peer_authentication`` the mode a pod accepts, and
``check`` the check itself.
"""

from commands.checks.traffic.check import traffic_policy

__all__ = ["traffic_policy"]
