"""The training worker: a loop that re-queues jobs of dead workers, claims the next queued job and runs it.

Run as many as you like (`tunehouse worker`); claims are atomic, so no two workers take the same job.
Setting `stop_event` (SIGTERM/SIGINT in the CLI) makes a running job save its state and go back to the queue,
and cuts a running in-job evaluation short. A worker process still alive SHUTDOWN_GRACE_SECONDS after the
signal exits anyway: everything it writes is durable at every moment, and a dead worker's job is re-queued.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time

from tunehouse.config import Settings
from tunehouse.store import leases
from tunehouse.store.db import OperationalError, connect
from tunehouse.worker.execution import run_job

log = logging.getLogger("tunehouse.worker")
# Pausing a job saves LoRA weights + optimizer state (a few seconds for Gemma 270M on a busy CPU).
SHUTDOWN_GRACE_SECONDS = 20.0
RECONNECT_SECONDS = 5.0


def run_worker(settings: Settings, stop_event: threading.Event | None = None, max_jobs: int | None = None) -> int:
    """Serve queued jobs until `stop_event` is set (or `max_jobs` were run); returns the number of jobs run.

    A database that goes away (PostgreSQL restarting, a network blip) costs a log line and a reconnect, not the
    worker: a job it was running when that happened is re-queued by whichever worker sees its heartbeat stop.
    """
    stop_event = stop_event or threading.Event()
    worker_id = leases.make_worker_id()
    log.info("worker %s serving %s", worker_id, settings.db_path or "PostgreSQL")
    done = 0
    conn = None
    while not stop_event.is_set() and (max_jobs is None or done < max_jobs):
        try:
            conn = conn or connect(settings)
            done += _serve_once(settings, conn, worker_id, stop_event)
        except OperationalError as e:
            log.warning("database unavailable (%s); reconnecting in %.0fs", e, RECONNECT_SECONDS)
            _close_quietly(conn)
            conn = None
            stop_event.wait(RECONNECT_SECONDS)
    _close_quietly(conn)
    return done


def _serve_once(settings: Settings, conn, worker_id: str, stop_event: threading.Event) -> int:
    """Re-queue dead workers' jobs, then claim and run one job (or wait a poll interval); returns jobs run."""
    for job_id in leases.requeue_stale(conn, settings.stale_after_seconds):
        log.warning("re-queued job %s: its worker stopped responding", job_id)
    job = leases.claim_job(conn, worker_id)
    if job is None:
        stop_event.wait(settings.worker_poll_seconds)
        return 0
    log.info("running job %s (%s)", job["id"], job["base_model"])
    outcome = run_job(settings, conn, job, worker_id, stop_event)
    log.info("job %s: %s", job["id"], outcome)
    return 1


def _close_quietly(conn) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except OperationalError as e:  # the connection died with the database; nothing left to release
        log.info("closing a broken database connection: %s", e)


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
    _install_stop_handlers(stop)
    _die_with_parent()
    # Import torch and the engine while we wait for the first job (seconds on a busy CPU), not after claiming it.
    threading.Thread(target=_preload_engine, daemon=True).start()
    return run_worker(settings, stop)


def _install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT: stop gracefully, and start the watchdog that ends the process if that does not happen.

    A second signal only sets `stop` again: Ctrl+C on `serve` sends SIGINT to the whole terminal group and
    `serve` then sends SIGTERM, and that pair must still let the running job save its state.
    """

    def on_signal(signum, frame) -> None:
        if not stop.is_set():
            log.info("signal %d: stopping (a running job saves its state and goes back to the queue)", signum)
            threading.Thread(target=_exit_after_grace, args=(signum,), name="shutdown-watchdog", daemon=True).start()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)


def _exit_after_grace(signum: int) -> None:
    # Daemon threads still run while the interpreter waits for other threads at exit, so this also ends a
    # worker whose main thread returned but whose shutdown is stuck.
    time.sleep(SHUTDOWN_GRACE_SECONDS)
    log.error("still running %.0fs after signal %d: exiting now; the threads were at:", SHUTDOWN_GRACE_SECONDS, signum)
    faulthandler.dump_traceback(all_threads=True)
    os._exit(128 + signum)


def _preload_engine() -> None:
    try:
        import tunehouse.training.engine  # noqa: F401
    except Exception as e:  # the job that needs it will report the real error
        log.warning("could not preload the training engine: %s", e)
