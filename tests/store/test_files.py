"""File and job-file checks never lose an upload or strand a job when the validator itself breaks, and say why."""

from __future__ import annotations

import logging

import pytest

from tunehouse.config import Settings
from tunehouse.store import db, files, jobs
from tunehouse.store.job_validation import validate_job_files


@pytest.fixture
def settings(tmp_path, database_url):
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def broken_validator(monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("validator bug")

    monkeypatch.setattr("tunehouse.data.validation.validate_file", explode)


def _upload(conn, settings, tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    return files.add_file(conn, settings, project="p", filename="train.jsonl", purpose="fine-tune", src=src)


def test_a_crashing_upload_check_keeps_the_file_and_logs_the_traceback(settings, tmp_path, broken_validator, caplog):
    conn = db.connect(settings)
    with caplog.at_level(logging.ERROR, logger="tunehouse.store"):
        row = _upload(conn, settings, tmp_path)
    assert row["status"] == "error" and "RuntimeError: validator bug" in row["status_details"]
    assert files.file_blob(settings, row).is_file()
    logged = [r for r in caplog.records if r.name == "tunehouse.store" and r.exc_info]
    assert logged and row["id"] in logged[0].getMessage()


def test_a_crashing_job_check_fails_the_job_and_logs_the_traceback(settings, tmp_path, monkeypatch, caplog):
    conn = db.connect(settings)
    file_id = _upload(conn, settings, tmp_path)["id"]
    spec = {"model": "m", "base_model": "m", "training_file": file_id, "seed": 1, "metadata": None,
            "hyperparameters": {"n_epochs": "auto"}}
    job = jobs.create_job(conn, settings, "p", spec)
    monkeypatch.setattr("tunehouse.data.validation.validate_file",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("validator bug")))
    with caplog.at_level(logging.ERROR, logger="tunehouse.store"):
        assert validate_job_files(conn, settings, job["id"]) == "failed"
    error = jobs.get_job(conn, "p", job["id"])["error"]
    assert "validation_error" in error and "RuntimeError: validator bug" in error
    assert any(r.name == "tunehouse.store" and r.exc_info and job["id"] in r.getMessage() for r in caplog.records)
