#!/usr/bin/env bash
# The README's test command: set up, lint, run every test (the `slow` ones on the real Gemma included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The dashboard tests (tests/web) drive a real headless Chromium: Debian's package, never a browser download.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing chromium (apt-get) for the dashboard's browser tests" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# The store tests run on a real PostgreSQL too (tests/pg.py starts a throwaway cluster): Debian's server package.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing postgresql (apt-get) for the store's PostgreSQL tests" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
.venv/bin/ruff check src tests benchmarks examples
# Slow tests share one converted Gemma cache across runs.
export TUNEHOUSE_TEST_CACHE=${TUNEHOUSE_TEST_CACHE:-$PWD/.cache/test-data}
.venv/bin/python -m pytest "$@"
