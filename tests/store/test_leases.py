"""Job lifecycle in the store: atomic claims, heartbeats, stale re-queue, control answers, checkpoints."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest

from tunehouse.config import Settings
from tunehouse.store import checkpoints, db, jobs, leases
from tunehouse.store.errors import Conflict


@pytest.fixture
def settings(tmp_path, database_url):
    return Settings(data_dir=tmp_path, database_url=database_url)


@pytest.fixture
def conn(settings):
    c = db.connect(settings)
    yield c
    c.close()


def _job(conn, settings, project="p", metadata=None, status="queued"):
    spec = {"model": "m", "base_model": "m", "training_file": "file-x", "seed": 1, "metadata": metadata,
            "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}}
    row = jobs.create_job(conn, settings, project, spec)
    conn.execute("UPDATE jobs SET status = ? WHERE id = ?", (status, row["id"]))
    return jobs.get_job(conn, project, row["id"])


def _claim_all(data_dir: str, database_url: str | None, out) -> None:
    conn = db.connect(Settings(data_dir=data_dir, database_url=database_url))
    wid = leases.make_worker_id()
    got = []
    while (row := leases.claim_job(conn, wid)) is not None:
        got.append(row["id"])
    out.put(got)


def test_concurrent_workers_never_claim_the_same_job(conn, settings):
    ids = {_job(conn, settings)["id"] for _ in range(40)}
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    args = (str(settings.data_dir), settings.database_url, out)
    procs = [ctx.Process(target=_claim_all, args=args) for _ in range(4)]
    for p in procs:
        p.start()
    claimed = [job_id for _ in procs for job_id in out.get(timeout=60)]
    for p in procs:
        p.join(30)
    assert sorted(claimed) == sorted(ids)  # every job exactly once


def test_claim_takes_oldest_first_and_logs_started_then_resumed(conn, settings):
    a, b = _job(conn, settings), _job(conn, settings)
    first = leases.claim_job(conn, "w:1:x")
    assert first["id"] == a["id"] and first["status"] == "running"
    leases.release_job(conn, a["id"], "w:1:x", requeue=True)
    again = leases.claim_job(conn, "w:2:y")
    assert again["id"] == a["id"]
    messages = [e["message"] for e in jobs.list_events(conn, a["id"])[0]]
    assert messages[:3] == ["Fine-tuning job resumed by a worker",
                            "Worker shut down; job re-queued and will resume from its saved state",
                            "Fine-tuning job started"]
    assert leases.claim_job(conn, "w:3:z")["id"] == b["id"]


def test_stale_heartbeat_requeues_and_fresh_one_does_not(conn, settings):
    job = _job(conn, settings)
    leases.claim_job(conn, "otherhost:1:x")
    assert leases.requeue_stale(conn, 60, alive=lambda w: None) == []
    conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", (time.time() - 120, job["id"]))
    assert leases.requeue_stale(conn, 60, alive=lambda w: None) == [job["id"]]
    row = jobs.get_job(conn, None, job["id"])
    assert row["status"] == "queued" and row["worker_id"] is None


def test_dead_local_worker_is_requeued_without_waiting(conn, settings):
    job = _job(conn, settings)
    leases.claim_job(conn, "host:999999:x")
    assert leases.requeue_stale(conn, 3600, alive=lambda w: False) == [job["id"]]


def test_worker_alive_checks_the_pid_on_this_host():
    import os
    import socket

    assert leases.worker_alive(f"{socket.gethostname()}:{os.getpid()}:abc") is True
    assert leases.worker_alive("some-other-host:1:abc") is None


def test_heartbeat_only_for_the_owner(conn, settings):
    job = _job(conn, settings)
    leases.claim_job(conn, "w:1:a")
    assert leases.heartbeat(conn, job["id"], "w:1:a") and not leases.heartbeat(conn, job["id"], "w:2:b")


def test_control_answers_follow_the_user_and_ownership(conn, settings):
    job = _job(conn, settings)
    leases.claim_job(conn, "w:1:a")
    assert leases.control_state(conn, job["id"], "w:1:a") == "continue"
    assert leases.control_state(conn, job["id"], "w:2:b") == "pause"  # not ours any more: stop, keep state
    jobs.pause_job(conn, "p", job["id"])
    assert leases.control_state(conn, job["id"], "w:1:a") == "pause"
    jobs.resume_job(conn, "p", job["id"])  # resumed before the engine stopped: carry on, running again
    assert leases.control_state(conn, job["id"], "w:1:a") == "continue"
    assert jobs.get_job(conn, None, job["id"])["status"] == "running"
    jobs.cancel_job(conn, "p", job["id"])
    assert leases.control_state(conn, job["id"], "w:1:a") == "cancel"


def test_user_controls_reject_impossible_transitions(conn, settings):
    job = _job(conn, settings, status="succeeded")
    for action in (jobs.cancel_job, jobs.pause_job, jobs.resume_job):
        with pytest.raises(Conflict):
            action(conn, "p", job["id"])


def test_checkpoints_keep_the_newest_n(conn, settings, tmp_path):
    job = _job(conn, settings)
    for step in (2, 4, 6, 8):
        checkpoints.add_checkpoint(conn, job, step, str(tmp_path / f"s{step}"), {"step": step, "train_loss": 1.0},
                                   keep=3)
    steps = [r["step"] for r in conn.execute("SELECT step FROM checkpoints ORDER BY step")]
    assert steps == [4, 6, 8]
    assert conn.execute("SELECT model_id FROM checkpoints WHERE step = 8").fetchone()[0].endswith(":ckpt-step-8")


def test_complete_job_only_by_the_owner_of_a_running_job(conn, settings, tmp_path):
    job = _job(conn, settings)
    leases.claim_job(conn, "w:1:a")
    args = dict(adapter_ref=str(tmp_path), trained_tokens=5, hyperparameters={"n_epochs": 1},
                result_file_ids=["file-r"])
    assert not jobs.complete_job(conn, job, "w:2:b", **args)
    assert jobs.complete_job(conn, job, "w:1:a", **args)
    row = jobs.get_job(conn, "p", job["id"])
    assert row["status"] == "succeeded" and row["fine_tuned_model"] == job["model_id"]
    assert json.loads(row["result_files"]) == ["file-r"]


def test_metadata_filter_matches_all_pairs(conn, settings):
    a = _job(conn, settings, metadata={"x": "1", "y": "2"})
    _job(conn, settings, metadata={"x": "1"})
    rows, _ = jobs.list_jobs(conn, "p", metadata={"x": "1", "y": "2"})
    assert [r["id"] for r in rows] == [a["id"]]


def test_model_ids_follow_openai_shape(conn, settings):
    job = _job(conn, settings)
    base, org, suffix, tag = job["model_id"].split(":")[1:]
    assert (base, org, suffix) == ("m", settings.org, "") and len(tag) == 8


def test_a_worker_that_lost_its_job_can_no_longer_change_it(conn, settings, tmp_path):
    job = _job(conn, settings)
    leases.claim_job(conn, "old:1:a")
    conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", (time.time() - 120, job["id"]))
    assert leases.requeue_stale(conn, 60, alive=lambda w: None) == [job["id"]]
    assert leases.claim_job(conn, "new:2:b")["id"] == job["id"]
    # The old worker wakes up (a long GC pause, a network partition): every write it tries is refused.
    assert not leases.heartbeat(conn, job["id"], "old:1:a")
    assert not jobs.set_hyperparameters(conn, job["id"], "old:1:a", {"n_epochs": 9})
    jobs.set_estimated_finish(conn, job["id"], "old:1:a", 123)
    assert leases.control_state(conn, job["id"], "old:1:a") == "pause"
    leases.release_job(conn, job["id"], "old:1:a", requeue=True)
    assert not jobs.complete_job(conn, job, "old:1:a", adapter_ref=str(tmp_path), trained_tokens=1, hyperparameters={},
                                 result_file_ids=[])
    row = jobs.get_job(conn, "p", job["id"])
    assert (row["status"], row["worker_id"], row["estimated_finish"], row["fine_tuned_model"]) == (
        "running", "new:2:b", None, None)
    assert json.loads(row["hyperparameters"])["n_epochs"] == "auto"
    assert leases.heartbeat(conn, job["id"], "new:2:b")
