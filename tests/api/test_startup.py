"""Startup finishes the file checks of jobs a crash left in validating_files (nothing stays stuck)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import TINY
from tests.tiny import FIXTURES
from tunehouse.api.app import create_app
from tunehouse.store import db, files, jobs


def test_jobs_left_validating_are_checked_at_startup(settings, tmp_path):
    conn = db.connect(settings)
    src = tmp_path / "t.jsonl"
    src.write_bytes((FIXTURES / "identity_chat.jsonl").read_bytes())
    f = files.add_file(conn, settings, project="default", filename="t.jsonl", purpose="fine-tune", src=src)
    spec = {"model": TINY, "base_model": TINY, "training_file": f["id"], "seed": 0, "metadata": None,
            "hyperparameters": {"n_epochs": "auto"}}
    job = jobs.create_job(conn, settings, "default", spec)  # as if the server died before validating it
    assert job["status"] == "validating_files"
    with TestClient(create_app(settings)) as http:
        body = http.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert body["status"] == "queued"
