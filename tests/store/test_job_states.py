"""The job state machine: one transition table, and every status change in the store guarded by it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tunehouse.config import Settings
from tunehouse.store import db, jobs, leases
from tunehouse.store.errors import Conflict
from tunehouse.store.job_states import FINAL, TRANSITIONS, JobStatus, TransitionError, sources, status_guard

S = JobStatus
STORE = Path(__file__).resolve().parents[2] / "src" / "tunehouse" / "store"


@pytest.fixture
def conn(tmp_path, database_url):
    c = db.connect(Settings(data_dir=tmp_path, database_url=database_url))
    yield c
    c.close()


def _job(conn, tmp_path, status: JobStatus):
    spec = {"model": "m", "base_model": "m", "training_file": "file-x", "seed": 1, "metadata": None,
            "hyperparameters": {"n_epochs": "auto"}}
    row = jobs.create_job(conn, Settings(data_dir=tmp_path), "p", spec)
    conn.execute("UPDATE jobs SET status = ? WHERE id = ?", (status, row["id"]))  # a test setting up a state
    return row["id"]


def test_final_states_have_no_way_out_and_every_state_is_in_the_table():
    assert set(TRANSITIONS) == set(JobStatus)
    assert FINAL == {S.SUCCEEDED, S.FAILED, S.CANCELLED}
    assert S.VALIDATING_FILES not in sources(S.RUNNING)  # a job runs only after its files were checked


def test_a_restriction_outside_the_table_is_refused():
    with pytest.raises(TransitionError, match="succeeded -> queued"):
        status_guard(S.QUEUED, (S.SUCCEEDED,))


@pytest.mark.parametrize("final", sorted(FINAL))
def test_a_final_job_cannot_fail_be_requeued_or_claimed(conn, tmp_path, final):
    job_id = _job(conn, tmp_path, final)
    assert not jobs.fail_job(conn, job_id, "x", "late failure", None)
    conn.execute("UPDATE jobs SET worker_id = 'w:1:a' WHERE id = ?", (job_id,))
    leases.release_job(conn, job_id, "w:1:a", requeue=True)
    assert jobs.get_job(conn, None, job_id)["status"] == final
    with pytest.raises(Conflict):
        jobs.pause_job(conn, "p", job_id)


def test_paused_job_is_not_claimed_until_resumed(conn, tmp_path):
    job_id = _job(conn, tmp_path, S.PAUSED)
    assert leases.claim_job(conn, "w:1:a") is None
    jobs.resume_job(conn, "p", job_id)
    assert leases.claim_job(conn, "w:1:a")["id"] == job_id


def test_no_store_sql_writes_a_status_literal():
    """Status changes take their value and their guard from job_states, never a literal in the SQL."""
    literal = re.compile(r"status\s*(=|IN|NOT IN)\s*\(?\s*'", re.IGNORECASE)
    offenders = [f"{p.name}:{n}" for p in STORE.glob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert offenders == []
