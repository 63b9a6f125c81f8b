"""Regenerate tests/data/envoy-<case>/ from the real Envoy: ``python scripts/capture_envoy_cases.py [CASE ...]``.

Each case (tests/support/envoy_cases.py) starts Envoy configured as istiod configures a sidecar, drives it into
one failure of the response-flag table and stores /stats, /clusters?format=json and /memory (and /config_dump
where the check reads it).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.envoy import ENVOY_MISSING, find_envoy  # noqa: E402
from tests.support.envoy_cases import capture_all  # noqa: E402


def main(names: list[str]) -> int:
    binary = find_envoy()
    if binary is None:
        print(ENVOY_MISSING, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as workdir:
        for directory in capture_all(binary, Path(workdir), tuple(names)):
            print(f"captured {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
