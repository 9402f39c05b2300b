#!/usr/bin/env bash
# The README's test command: set up, lint, run every test (the `slow` ones on the real Gemma included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks examples
# Slow tests share one converted Gemma cache across runs.
export TUNEHOUSE_TEST_CACHE=${TUNEHOUSE_TEST_CACHE:-$PWD/.cache/test-data}
.venv/bin/python -m pytest "$@"
