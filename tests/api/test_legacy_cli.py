"""The legacy CLI of openai==2.34.0 (`openai api ...`) against a live server, from its own virtualenv.

The virtualenv is built once into pytest's cache; the test is skipped when it cannot be made (no registry).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.live import chat_file
from tests.conftest import TINY

LEGACY = "openai==2.34.0"


@pytest.fixture(scope="module")
def legacy_openai(request) -> Path:
    venv = Path(request.config.cache.mkdir("legacy-openai-2.34.0"))
    exe = venv / "bin" / "openai"
    if not exe.exists():
        try:
            made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True)
            if made.returncode == 0:
                made = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", LEGACY], capture_output=True,
                                      timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip(f"installing {LEGACY} timed out (no package registry?)")
        if made.returncode != 0 or not exe.exists():
            pytest.skip(f"cannot build a virtualenv with {LEGACY}: {made.stderr.decode()[-300:]}")
    return exe


def test_legacy_cli_upload_create_and_events(legacy_openai, keyed_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(OPENAI_BASE_URL=keyed_server.base_url, OPENAI_API_KEY="key-alpha")

    def cli(*args) -> dict:
        r = subprocess.run([str(legacy_openai), "api", *args], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    path = chat_file(tmp_path, 12)
    f = cli("files.create", "-f", str(path), "-p", "fine-tune")  # sends the full path as the filename
    assert f["filename"] == "train.jsonl" and f["status"] == "processed"
    job = cli("fine_tuning.jobs.create", "-m", TINY, "-F", f["id"])
    assert job["status"] == "validating_files" and job["training_file"] == f["id"]
    events = cli("fine_tuning.jobs.list_events", "-i", job["id"])
    assert f"Created fine-tuning job: {job['id']}" in [e["message"] for e in events["data"]]
