"""A worker with train_processes=2 runs the job under torchrun (gloo on CPU) through the real store: the job
succeeds with every metric, event and checkpoint row written once; a shutdown pauses the ranks and re-queues; a
crashed rank with no restart left fails the job with a server_error that says what happened."""

from __future__ import annotations

import os
import signal
import threading

from tests.training.test_distributed import _rank_pid
from tests.worker.test_worker import _messages, _queued_job
from tunehouse.store import db, jobs
from tunehouse.worker.distributed_run import JOB_FILE, LOG_FILE
from tunehouse.worker.main import run_worker


def _rows(conn, table: str, job_id: str) -> int:
    return conn.execute(f"SELECT COUNT(*) FROM {table} WHERE job_id = ?", (job_id,)).fetchone()[0]


def test_a_two_process_job_succeeds_with_every_row_written_once(settings, tmp_path):
    settings = settings.model_copy(update={"train_processes": "2"})
    conn = db.connect(settings)
    job_id = _queued_job(settings, conn, tmp_path)  # 12 examples, batch 4, 2 epochs: 6 steps
    assert run_worker(settings, max_jobs=1) == 1
    job = jobs.get_job(conn, "p", job_id)
    assert job["status"] == "succeeded" and job["trained_tokens"] > 0
    steps = [r[0] for r in conn.execute("SELECT step FROM job_metrics WHERE job_id = ? ORDER BY step", (job_id,))]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert _rows(conn, "checkpoints", job_id) == 2
    msgs = _messages(conn, job_id)
    assert sum(m.startswith("Step ") for m in msgs) == 6
    assert sum(m.startswith("Training 12 examples") for m in msgs) == 1
    assert sum(m == "Training finished" for m in msgs) == 1
    assert (settings.jobs_dir / job_id / LOG_FILE).is_file()  # torchrun's and the ranks' output


def test_shutdown_pauses_the_ranks_and_the_next_run_resumes(settings, tmp_path):
    settings = settings.model_copy(update={"train_processes": "2"})
    conn = db.connect(settings)
    job_id = _queued_job(settings, conn, tmp_path, n_epochs=2, batch_size=2)  # 12 steps
    stop, watch = threading.Event(), db.connect(settings)

    def stop_after_a_few_steps():
        while not stop.is_set():
            if _rows(watch, "job_metrics", job_id) >= 3:
                stop.set()
            stop.wait(0.05)

    watcher = threading.Thread(target=stop_after_a_few_steps)
    watcher.start()
    run_worker(settings, stop_event=stop)
    watcher.join()
    assert jobs.get_job(conn, "p", job_id)["status"] == "queued"
    assert any(m.startswith("Paused at step") for m in _messages(conn, job_id))
    run_worker(settings, max_jobs=1)
    assert jobs.get_job(conn, "p", job_id)["status"] == "succeeded"
    assert any(m.startswith("Resuming from step") for m in _messages(conn, job_id))
    steps = [r[0] for r in conn.execute("SELECT step FROM job_metrics WHERE job_id = ? ORDER BY step", (job_id,))]
    assert steps == list(range(1, 13))


def test_a_crashed_rank_without_restarts_fails_the_job_with_a_server_error(settings, tmp_path):
    settings = settings.model_copy(update={"train_processes": "2", "train_max_restarts": 0})
    conn = db.connect(settings)
    job_id = _queued_job(settings, conn, tmp_path, n_epochs=2, batch_size=2)  # 12 steps
    watch, killed = db.connect(settings), threading.Event()

    def kill_rank_one_after_two_steps():
        while not killed.is_set():
            if _rows(watch, "job_metrics", job_id) >= 2:
                os.kill(_rank_pid(settings.jobs_dir / job_id / JOB_FILE, 1), signal.SIGKILL)
                killed.set()
            killed.wait(0.05)

    killer = threading.Thread(target=kill_rank_one_after_two_steps)
    killer.start()
    try:
        assert run_worker(settings, max_jobs=1) == 1
    finally:
        killed.set()
        killer.join()
    job = jobs.get_job(conn, "p", job_id)
    assert job["status"] == "failed" and job["worker_id"] is None
    error = job["error"]
    assert "server_error" in error and "torchrun exited with code 1 without a result" in error
    assert "SIGKILL" in error
