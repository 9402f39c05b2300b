#!/usr/bin/env bash
# Creates .venv and installs tunehouse with its dev tools. CPU machines get the pinned CPU torch wheel;
# where nvidia-smi answers, pip resolves torch from the package's plain range (a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
constraint=(-c constraints/cpu.txt)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then constraint=(); fi
if ! .venv/bin/python -c "import llama_cpp" >/dev/null 2>&1; then
  # pip -q prints nothing while it builds llama.cpp: say so, or a newcomer thinks setup hangs.
  echo "setup: installing tunehouse into .venv; the first time, pip compiles llama-cpp-python from source" \
       "(about 7 minutes with no output; later setups reuse the built wheel from pip's cache)" >&2
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "${constraint[@]}" -e ".[dev]"
# The dashboard tests (tests/web) drive a real headless Chromium: Debian's package, never a browser download.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing chromium (apt-get) for the dashboard's browser tests" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
