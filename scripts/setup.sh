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
