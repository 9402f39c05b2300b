#!/usr/bin/env bash
# The README's main command: set up, then validate -> fine-tune the embedded Gemma 3 270M -> evaluate base vs tuned.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/tunehouse quickstart "$@"
