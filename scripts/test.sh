#!/usr/bin/env bash
# Set up everything the tests need (system packages, .venv with test extras) and run them.
# CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests use the real Alertmanager/amtool and promtool (../shared/TESTING.md) and a real browser.
missing=()
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v promtool >/dev/null || missing+=(prometheus)
# tests/test_demo_console.py drives Debian's headless chromium through chromedriver (no browser download).
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# tests/support/postgres.py starts a real PostgreSQL (initdb/pg_ctl into a temp dir) for the second backend.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# tests/test_faults.py runs one replica with its clock minutes ahead under libfaketime.
command -v faketime >/dev/null || missing+=(faketime)
# tests/test_demo_console.py's accessibility check needs axe-core from the npm registry (below).
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null; then
    echo "scripts/test.sh: need ${missing[*]} (Debian packages); install them and re-run" >&2
    exit 1
  fi
  echo "installing ${missing[*]} with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'

# checkov scans deploy/kubernetes; its large dependency tree lives in a venv of its own so it cannot
# pin the project's packages.  tests/test_deploy.py finds it there (or at $CHECKOV).
if [ ! -x .venv-checkov/bin/checkov ]; then
  python3 -m venv .venv-checkov
  .venv-checkov/bin/pip install --quiet --disable-pip-version-check 'checkov>=3.2'
fi

# tests/test_demo_console.py runs axe-core in the browser: the current 4.x from the npm registry (the
# axe-selenium-python wheel ships a 2018 copy), unpacked once into .cache/axe-core/axe.min.js.
if [ ! -f .cache/axe-core/axe.min.js ]; then
  command -v npm >/dev/null || { echo "scripts/test.sh: need npm for axe-core (apt-get install -y npm)" >&2; exit 1; }
  mkdir -p .cache/axe-core
  (cd .cache/axe-core && npm pack --silent axe-core@4 >/dev/null && tar -xzf axe-core-*.tgz --strip-components=1 \
     package/axe.min.js && rm -f axe-core-*.tgz)
fi

# Layers: commands/ never imports bot/, Slack, SQLite or the scheduler.
.venv/bin/lint-imports --no-cache
.venv/bin/ruff check --quiet commands bot tests bench examples
# Types in commands/ and bot/ ([tool.mypy] in pyproject.toml): default checks, zero errors.
.venv/bin/mypy

# Most tests wait on real processes and sockets rather than the CPU, so four workers on two cores cut the
# suite from about 8 minutes to about 3.5 (docs/benchmarks.md).  MESHBOT_TEST_WORKERS=0 runs it serially.
# loadgroup hands out one test at a time, the slowest files first (tests/support/ordering.py), so no worker is
# left with minutes of work while the others idle; tests sharing a module-scoped fixture stay on one worker.
# pytest caches its assertion-rewritten test modules as bytecode; with PYTHONDONTWRITEBYTECODE set (some images
# do) every worker rewrote them all on every run: 11 s of collection per worker instead of about 4.
unset PYTHONDONTWRITEBYTECODE
set +e
.venv/bin/pytest -n "${MESHBOT_TEST_WORKERS:-4}" --dist loadgroup --no-loadscope-reorder "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "scripts/test.sh: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit $status
