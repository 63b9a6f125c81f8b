#!/usr/bin/env bash
# Set up meshbot in .venv and show the bundled outage: first the diagnosis (printed), then the whole bot
# in a browser — an embedded Slack workspace and Kubernetes API around the real meshbot — until Ctrl-C.
# Pass --once for the printed diagnosis only; other arguments go to `meshbot demo` (e.g. --port 8081).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[demo]'
if [ "${1:-}" = "--once" ]; then
  exec .venv/bin/meshbot demo "$@"
fi
.venv/bin/meshbot demo --once
exec .venv/bin/meshbot demo --serve "$@"
