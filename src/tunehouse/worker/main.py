"""The training worker: a loop that re-queues jobs of dead workers, claims the next queued job and runs it.

Run as many as you like (`tunehouse worker`); claims are atomic, so no two workers take the same job.
Setting `stop_event` (SIGTERM/SIGINT in the CLI) makes a running job save its state and go back to the queue.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from tunehouse.config import Settings
from tunehouse.store import leases
from tunehouse.store.db import connect
from tunehouse.worker.execution import run_job

log = logging.getLogger("tunehouse.worker")


def run_worker(settings: Settings, stop_event: threading.Event | None = None, max_jobs: int | None = None) -> int:
    """Serve queued jobs until `stop_event` is set (or `max_jobs` were run); returns the number of jobs run."""
    stop_event = stop_event or threading.Event()
    worker_id = leases.make_worker_id()
    conn = connect(settings)
    log.info("worker %s serving %s", worker_id, settings.db_path)
    done = 0
    try:
        while not stop_event.is_set() and (max_jobs is None or done < max_jobs):
            for job_id in leases.requeue_stale(conn, settings.stale_after_seconds):
                log.warning("re-queued job %s: its worker stopped responding", job_id)
            job = leases.claim_job(conn, worker_id)
            if job is None:
                stop_event.wait(settings.worker_poll_seconds)
                continue
            log.info("running job %s (%s)", job["id"], job["base_model"])
            outcome = run_job(settings, conn, job, worker_id, stop_event)
            log.info("job %s: %s", job["id"], outcome)
            done += 1
    finally:
        conn.close()
    return done


def _die_with_parent() -> None:
    """As `serve`'s child: ask Linux to SIGTERM us when the parent dies, even by SIGKILL (no orphan workers)."""
    if sys.platform != "linux" or os.environ.get("TUNEHOUSE_WORKER_CHILD") != "1":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def serve_worker(settings: Settings) -> int:
    """A worker process's main: logging, SIGTERM/SIGINT -> save the running job's state and re-queue it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _die_with_parent()
    # Import torch and the engine while we wait for the first job (seconds on a busy CPU), not after claiming it.
    threading.Thread(target=_preload_engine, daemon=True).start()
    return run_worker(settings, stop)


def _preload_engine() -> None:
    try:
        import tunehouse.training.engine  # noqa: F401
    except Exception as e:  # the job that needs it will report the real error
        log.warning("could not preload the training engine: %s", e)
