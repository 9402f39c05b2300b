"""The seed workflow scripts in examples/ against a live tunehouse server (in-process) with the tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from tests.tiny import FIXTURES
from tunehouse.cli.local_server import local_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def server(settings):
    with local_server(settings, worker=True) as url:
        yield url


def _run(url: str, script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TUNEHOUSE_BASE_URL=url, TUNEHOUSE_API_KEY="test")
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _wait(client: openai.OpenAI, job_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job.status
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def test_seed_workflow_scripts(server, tmp_path):
    train = tmp_path / "train.jsonl"
    lines = (FIXTURES / "identity_chat.jsonl").read_text(encoding="utf-8").splitlines()[:10]
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")

    created = _run(server, "fine_tune.py", str(train), "--model", "tiny-gemma", "--suffix", "ex", "--epochs", "1")
    assert created.returncode == 0, created.stderr
    job_id = created.stdout.strip()
    assert job_id.startswith("ftjob-") and "Uploaded" in created.stderr

    status = _run(server, "check_fine_tune_status.py", job_id)
    assert status.returncode == 0, status.stderr
    assert f"Job:     {job_id}" in status.stdout and "Status:" in status.stdout
    # The latest events are listed; which ones depends on how far training got, so check the shape only.
    assert "Recent events (oldest first):\n  [info] " in status.stdout

    client = openai.OpenAI(base_url=server, api_key="test")
    assert _wait(client, job_id) == "succeeded"
    listed = _run(server, "check_fine_tune_status.py", "--list")
    model = client.fine_tuning.jobs.retrieve(job_id).fine_tuned_model
    assert listed.returncode == 0 and job_id in listed.stdout and model in listed.stdout

    answer = _run(server, "use_fine_tuned_model.py", model, "Who are you?", "--max-tokens", "4")
    assert answer.returncode == 0, answer.stderr


def test_scripts_fail_with_one_line_on_bad_input(server, tmp_path):
    missing = _run(server, "use_fine_tuned_model.py", "ft:nope:x:y:z", "hi")
    assert missing.returncode == 1 and missing.stderr.startswith("Error:") and "Traceback" not in missing.stderr
    unknown = _run(server, "check_fine_tune_status.py", "ftjob-unknown")
    assert unknown.returncode == 1 and "Error:" in unknown.stderr
    no_args = _run(server, "check_fine_tune_status.py")
    assert no_args.returncode == 2 and "JOB_ID or --list" in no_args.stderr
