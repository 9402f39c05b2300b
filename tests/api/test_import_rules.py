"""The service's API and store never import the training stack (or torch): DEVELOPERS.md's import rule."""

from __future__ import annotations

import subprocess
import sys

MODULES = ["tunehouse.api.files", "tunehouse.api.fine_tuning", "tunehouse.api.models", "tunehouse.api.deps",
           "tunehouse.api.errors", "tunehouse.api.completion_requests", "tunehouse.api.inference_deps",
           "tunehouse.api.chat", "tunehouse.api.completions", "tunehouse.store.models", "tunehouse.store.checks",
           "tunehouse.store.runs", "tunehouse.worker.main"]


def test_api_store_and_worker_loop_import_no_training_and_no_torch():
    code = ("import importlib, sys\n"
            f"for m in {MODULES!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('tunehouse.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
