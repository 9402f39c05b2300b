"""Worker leases on jobs: the atomic claim, heartbeats, re-queueing jobs of dead workers, control and release.

Ownership: a running job row carries the claiming worker's id; every write the worker makes is guarded by
`worker_id = ?`, so a worker that lost its job (declared dead and re-queued) cannot overwrite the new owner.
Status changes go through the transition table (store/job_states.py).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from tunehouse.store.db import Connection, Row, new_id, now, transaction
from tunehouse.store.job_states import JobStatus, status_guard
from tunehouse.store.jobs import add_event

S = JobStatus


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('', 6)}"


def worker_alive(worker_id: str) -> bool | None:
    """True/False when the worker ran on this host (pid check), None when we cannot tell."""
    try:
        host, pid, _ = worker_id.rsplit(":", 2)
        pid_n = int(pid)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid_n, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_job(conn: Connection, worker_id: str) -> Row | None:
    """Take the oldest queued job; one UPDATE ... RETURNING, so two workers never get the same job."""
    # Idle workers poll every second: look before taking the write lock, so they do not contend for it.
    waiting = "SELECT id FROM jobs WHERE status = ? AND worker_id IS NULL ORDER BY seq LIMIT 1"
    if conn.execute(waiting, (S.QUEUED,)).fetchone() is None:
        return None
    if conn.dialect == "postgresql":
        # Lock the chosen row and pass over rows another claimer holds; the status guard below is re-checked
        # on the row's newest version, so no job is taken twice, and the store's write lock is not needed.
        waiting += " FOR UPDATE SKIP LOCKED"
    guard, allowed = status_guard(S.RUNNING, (S.QUEUED,))
    with transaction(conn, exclusive=False):
        row = conn.execute(
            "UPDATE jobs SET status = ?, worker_id = ?, heartbeat_at = ?, started_at = COALESCE(started_at, ?)"
            f" WHERE id = ({waiting}) AND {guard} RETURNING *",
            (S.RUNNING, worker_id, time.time(), now(), S.QUEUED, *allowed),
        ).fetchone()
        if row is not None:
            resumed = conn.execute(
                "SELECT 1 FROM events WHERE job_id = ? AND message = 'Fine-tuning job started'", (row["id"],)
            ).fetchone()
            add_event(conn, row["id"], "Fine-tuning job resumed by a worker" if resumed else "Fine-tuning job started")
    return row


def heartbeat(conn: Connection, job_id: str, worker_id: str) -> bool:
    cur = conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND worker_id = ?",
                       (time.time(), job_id, worker_id))
    return bool(cur.rowcount)


def requeue_stale(
    conn: Connection, stale_after: float, alive: Callable[[str], bool | None] = worker_alive
) -> list[str]:
    """Re-queue running jobs whose worker died: heartbeat older than `stale_after`, or its pid is gone.

    Paused/cancelled jobs whose worker died just lose the dead owner, so resume can hand them out again.
    """
    cutoff = time.time() - stale_after
    requeued = []
    owned = conn.execute("SELECT worker_id, heartbeat_at FROM jobs WHERE worker_id IS NOT NULL").fetchall()
    if not any((r["heartbeat_at"] or 0) < cutoff or alive(r["worker_id"]) is False for r in owned):
        return requeued  # the common case, decided without the write lock
    guard, allowed = status_guard(S.QUEUED, (S.RUNNING,))
    with transaction(conn):
        rows = conn.execute("SELECT id, status, worker_id, heartbeat_at FROM jobs WHERE worker_id IS NOT NULL")
        for r in rows.fetchall():
            if not ((r["heartbeat_at"] or 0) < cutoff or alive(r["worker_id"]) is False):
                continue
            cur = conn.execute(f"UPDATE jobs SET status = ?, worker_id = NULL WHERE id = ? AND {guard}",
                               (S.QUEUED, r["id"], *allowed))
            if cur.rowcount:
                add_event(conn, r["id"], "Worker stopped responding; job re-queued and will resume from its last saved"
                          " state", level="warn")
                requeued.append(r["id"])
            else:
                conn.execute("UPDATE jobs SET worker_id = NULL WHERE id = ?", (r["id"],))
    return requeued


def control_state(conn: Connection, job_id: str, worker_id: str) -> str:
    """What the engine should do next: "continue", "cancel" or "pause" (also when this worker lost the job)."""
    row = conn.execute("SELECT status, worker_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or row["status"] == S.CANCELLED:
        return "cancel"
    if row["worker_id"] != worker_id or row["status"] == S.PAUSED:
        return "pause"
    if row["status"] == S.QUEUED:  # resumed before we stopped: keep going and say so
        guard, allowed = status_guard(S.RUNNING, (S.QUEUED,))
        conn.execute(f"UPDATE jobs SET status = ? WHERE id = ? AND worker_id = ? AND {guard}",
                     (S.RUNNING, job_id, worker_id, *allowed))
    return "continue"


def release_job(conn: Connection, job_id: str, worker_id: str, *, requeue: bool = False) -> None:
    """Drop ownership after the engine stopped (paused/cancelled/shutdown); `requeue` a still-running job."""
    with transaction(conn):
        if requeue:
            guard, allowed = status_guard(S.QUEUED, (S.RUNNING,))
            cur = conn.execute(f"UPDATE jobs SET status = ? WHERE id = ? AND worker_id = ? AND {guard}",
                               (S.QUEUED, job_id, worker_id, *allowed))
            if cur.rowcount:
                add_event(conn, job_id, "Worker shut down; job re-queued and will resume from its saved state")
        conn.execute("UPDATE jobs SET worker_id = NULL WHERE id = ? AND worker_id = ?", (job_id, worker_id))
