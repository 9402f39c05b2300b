"""A worker whose PostgreSQL connections are cut (a server restart, a network blip) reconnects and goes on
claiming jobs, instead of dying with the first failed query."""

from __future__ import annotations

import threading
import time

import psycopg

from tests.worker.test_worker import _queued_job
from tunehouse.config import Settings
from tunehouse.store import db, jobs
from tunehouse.worker import main as worker_main


def _cut_connections(admin_url: str, database: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                             " AND pid <> pg_backend_pid()", (database,)).fetchall()
    return len(rows)


def test_a_worker_survives_its_database_connections_being_cut(settings, tmp_path, pg_server, pg_database_url,
                                                              monkeypatch):
    monkeypatch.setattr(worker_main, "RECONNECT_SECONDS", 0.2)
    pg_settings = Settings(**{**settings.model_dump(), "database_url": pg_database_url, "worker_poll_seconds": 0.1})
    stop = threading.Event()
    runner = threading.Thread(target=worker_main.run_worker, args=(pg_settings, stop), daemon=True)
    runner.start()
    try:
        time.sleep(1.0)  # the worker is polling on its connection
        assert _cut_connections(pg_server.url, pg_database_url.rsplit("/", 1)[1]) >= 1
        conn = db.connect(pg_settings)
        job_id = _queued_job(pg_settings, conn, tmp_path)
        deadline = time.monotonic() + 120
        while jobs.get_job(conn, "p", job_id)["status"] != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert jobs.get_job(conn, "p", job_id)["status"] == "succeeded"
        assert runner.is_alive()
        conn.close()
    finally:
        stop.set()
        runner.join(30)
