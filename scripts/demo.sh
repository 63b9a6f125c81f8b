#!/usr/bin/env bash
# Set up meshbot in .venv and run it on the embedded demo scenario (no Slack, no cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/meshbot demo "$@"
