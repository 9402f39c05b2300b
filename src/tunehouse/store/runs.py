"""The worker's side of a job: atomic claim, heartbeat, stale re-queue, control answers, metrics, checkpoints.

Ownership: a running job row carries the claiming worker's id; every write the worker makes is guarded by
`worker_id = ?`, so a worker that lost its job (declared dead and re-queued) cannot overwrite the new owner.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from tunehouse.store.db import new_id, now, transaction
from tunehouse.store.jobs import add_event


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


def claim_job(conn: sqlite3.Connection, worker_id: str) -> sqlite3.Row | None:
    """Take the oldest queued job; one UPDATE ... RETURNING, so two workers never get the same job."""
    # Idle workers poll every second: look before taking the write lock, so they do not contend for it.
    if conn.execute("SELECT 1 FROM jobs WHERE status = 'queued' AND worker_id IS NULL LIMIT 1").fetchone() is None:
        return None
    with transaction(conn):
        row = conn.execute(
            "UPDATE jobs SET status = 'running', worker_id = ?, heartbeat_at = ?, started_at = COALESCE(started_at, ?)"
            " WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND worker_id IS NULL ORDER BY seq LIMIT 1)"
            " RETURNING *",
            (worker_id, time.time(), now()),
        ).fetchone()
        if row is not None:
            resumed = conn.execute(
                "SELECT 1 FROM events WHERE job_id = ? AND message = 'Fine-tuning job started'", (row["id"],)
            ).fetchone()
            add_event(conn, row["id"], "Fine-tuning job resumed by a worker" if resumed else "Fine-tuning job started")
    return row


def heartbeat(conn: sqlite3.Connection, job_id: str, worker_id: str) -> bool:
    cur = conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND worker_id = ?",
                       (time.time(), job_id, worker_id))
    return bool(cur.rowcount)


def requeue_stale(
    conn: sqlite3.Connection, stale_after: float, alive: Callable[[str], bool | None] = worker_alive
) -> list[str]:
    """Re-queue running jobs whose worker died: heartbeat older than `stale_after`, or its pid is gone.

    Paused/cancelled jobs whose worker died just lose the dead owner, so resume can hand them out again.
    """
    cutoff = time.time() - stale_after
    requeued = []
    owned = conn.execute("SELECT worker_id, heartbeat_at FROM jobs WHERE worker_id IS NOT NULL").fetchall()
    if not any((r["heartbeat_at"] or 0) < cutoff or alive(r["worker_id"]) is False for r in owned):
        return requeued  # the common case, decided without the write lock
    with transaction(conn):
        rows = conn.execute("SELECT id, status, worker_id, heartbeat_at FROM jobs WHERE worker_id IS NOT NULL")
        rows = rows.fetchall()
        for r in rows:
            dead = (r["heartbeat_at"] or 0) < cutoff or alive(r["worker_id"]) is False
            if not dead:
                continue
            if r["status"] == "running":
                conn.execute("UPDATE jobs SET status = 'queued', worker_id = NULL WHERE id = ?", (r["id"],))
                add_event(conn, r["id"], "Worker stopped responding; job re-queued and will resume from its last saved"
                          " state", level="warn")
                requeued.append(r["id"])
            else:
                conn.execute("UPDATE jobs SET worker_id = NULL WHERE id = ?", (r["id"],))
    return requeued


def control_state(conn: sqlite3.Connection, job_id: str, worker_id: str) -> str:
    """What the engine should do next: "continue", "cancel" or "pause" (also when this worker lost the job)."""
    row = conn.execute("SELECT status, worker_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or row["status"] == "cancelled":
        return "cancel"
    if row["worker_id"] != worker_id or row["status"] == "paused":
        return "pause"
    if row["status"] == "queued":  # resumed before we stopped: keep going and say so
        conn.execute("UPDATE jobs SET status = 'running' WHERE id = ? AND worker_id = ?", (job_id, worker_id))
    return "continue"


def release_job(conn: sqlite3.Connection, job_id: str, worker_id: str, *, requeue: bool = False) -> None:
    """Drop ownership after the engine stopped (paused/cancelled/shutdown); `requeue` a still-running job."""
    with transaction(conn):
        if requeue:
            cur = conn.execute("UPDATE jobs SET status = 'queued' WHERE id = ? AND worker_id = ?"
                               " AND status = 'running'", (job_id, worker_id))
            if cur.rowcount:
                add_event(conn, job_id, "Worker shut down; job re-queued and will resume from its saved state")
        conn.execute("UPDATE jobs SET worker_id = NULL WHERE id = ? AND worker_id = ?", (job_id, worker_id))


def record_metrics(conn: sqlite3.Connection, job_id: str, metrics: dict, event: str | None) -> None:
    """Every step's metrics (for the results CSV) and, when `event` is given, a metrics event for the user."""
    with transaction(conn):
        conn.execute("INSERT OR REPLACE INTO job_metrics (job_id, step, data) VALUES (?, ?, ?)",
                     (job_id, int(metrics["step"]), json.dumps(metrics)))
        if event:
            keys = ("step", "train_loss", "valid_loss", "train_mean_token_accuracy", "valid_mean_token_accuracy",
                    "total_steps")
            data = {k: metrics[k] for k in keys if metrics.get(k) is not None}
            add_event(conn, job_id, event, type="metrics", data=data)


def job_metrics(conn: sqlite3.Connection, job_id: str) -> list[dict]:
    rows = conn.execute("SELECT data FROM job_metrics WHERE job_id = ? ORDER BY step", (job_id,))
    return [json.loads(r["data"]) for r in rows]


def set_estimated_finish(conn: sqlite3.Connection, job_id: str, worker_id: str, when: int) -> None:
    conn.execute("UPDATE jobs SET estimated_finish = ? WHERE id = ? AND worker_id = ?", (when, job_id, worker_id))


def add_checkpoint(
    conn: sqlite3.Connection, job: sqlite3.Row, step: int, adapter_dir: Path, metrics: dict, keep: int
) -> str:
    """Record a checkpoint model `ft:...:ckpt-step-N`; only the newest `keep` stay listed, as OpenAI keeps."""
    model_id = f"{job['model_id']}:ckpt-step-{step}"
    with transaction(conn):
        conn.execute("DELETE FROM checkpoints WHERE model_id = ?", (model_id,))  # re-run after a resume
        conn.execute(
            "INSERT INTO checkpoints (id, job_id, project, step, model_id, base_model, adapter_dir, metrics,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (new_id("ftckpt-"), job["id"], job["project"], step, model_id, job["base_model"], str(adapter_dir),
             json.dumps(metrics), now()),
        )
        conn.execute(
            "DELETE FROM checkpoints WHERE job_id = ? AND seq NOT IN"
            " (SELECT seq FROM checkpoints WHERE job_id = ? ORDER BY step DESC LIMIT ?)",
            (job["id"], job["id"], max(keep, 1)),
        )
        add_event(conn, job["id"], f"Checkpoint created at step {step}", data={"step": step, "model": model_id})
    return model_id


def complete_job(
    conn: sqlite3.Connection,
    job: sqlite3.Row,
    worker_id: str,
    *,
    adapter_dir: Path,
    trained_tokens: int,
    hyperparameters: dict,
    result_file_ids: list[str],
) -> bool:
    """running -> succeeded: publish the model, results file, resolved hyperparameters and the final events."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE jobs SET status = 'succeeded', fine_tuned_model = model_id, finished_at = ?, trained_tokens = ?,"
            " hyperparameters = ?, result_files = ?, estimated_finish = NULL, worker_id = NULL"
            " WHERE id = ? AND worker_id = ? AND status IN ('running', 'queued')",
            (now(), trained_tokens, json.dumps(hyperparameters), json.dumps(result_file_ids), job["id"], worker_id),
        )
        if not cur.rowcount:
            return False
        conn.execute(
            "INSERT INTO models (id, project, job_id, base_model, adapter_dir, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (job["model_id"], job["project"], job["id"], job["base_model"], str(adapter_dir), now()),
        )
        add_event(conn, job["id"], f"New fine-tuned model created: {job['model_id']}")
        add_event(conn, job["id"], "The job has successfully completed")
    return True


def remove_tree(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
