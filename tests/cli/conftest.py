"""CLI fixtures: an HTTP double of the API, a runner that invokes `tunehouse ...` in-process, OpenAI-shaped objects."""

from __future__ import annotations

import os
import socket

import pytest
from typer.testing import CliRunner

from tests.cli.double import start_double

FILE = {
    "id": "file-abc123",
    "object": "file",
    "bytes": 120,
    "created_at": 1763780000,
    "filename": "training_data.jsonl",
    "purpose": "fine-tune",
    "status": "processed",
    "status_details": None,
}
JOB = {
    "id": "ftjob-abc123",
    "object": "fine_tuning.job",
    "created_at": 1763780000,
    "finished_at": None,
    "model": "gpt-4o-mini-2024-07-18",
    "fine_tuned_model": None,
    "organization_id": "org-tunehouse",
    "result_files": [],
    "status": "validating_files",
    "validation_file": None,
    "training_file": "file-abc123",
    "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
    "trained_tokens": None,
    "error": None,
    "seed": 42,
}


@pytest.fixture
def api():
    double, stop = start_double()
    yield double
    stop()


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """Run `tunehouse ARGS` in-process; returns click's Result (exit_code, stdout, stderr)."""
    from tunehouse.cli import app

    for key in list(os.environ):
        if key.startswith("TUNEHOUSE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TUNEHOUSE_DATA_DIR", str(tmp_path / "cli-data"))
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal, so table cells are not folded
    runner = CliRunner()

    def run(*args: str, env: dict | None = None):
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return run
