"""Fine-tuning jobs and their events: creation, the status flow, and the user's cancel/pause/resume.

Status flow: validating_files -> queued -> running -> succeeded | failed | cancelled. `paused` (as OpenAI's
pause endpoint answers) is entered from queued or running; resume puts the job back to `queued` and the next
worker continues from the job directory's saved state. A running job's worker notices cancel/pause through
`control_state` at its next optimizer step (tunehouse.worker).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import string

from tunehouse.config import Settings
from tunehouse.store.db import list_page, new_id, now, transaction
from tunehouse.store.errors import Conflict, NotFound

FINAL = ("succeeded", "failed", "cancelled")
_MODEL_ALPHABET = string.ascii_lowercase + string.digits


def add_event(
    conn: sqlite3.Connection,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict | None = None,
) -> str:
    event_id = new_id("ftevent-")
    conn.execute(
        "INSERT INTO events (id, job_id, created_at, level, message, type, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (event_id, job_id, now(), level, message, type, json.dumps(data or {})),
    )
    return event_id


def create_job(conn: sqlite3.Connection, settings: Settings, project: str, spec: dict) -> sqlite3.Row:
    """Insert a job in `validating_files` with OpenAI's first two events; `spec` is already checked by the API.

    spec keys: model, base_model, init_adapter, training_file, validation_file, suffix, seed, hyperparameters,
    method_type, metadata, integrations.
    """
    job_id = new_id("ftjob-")
    tag = "".join(secrets.choice(_MODEL_ALPHABET) for _ in range(8))
    model_id = f"ft:{spec['base_model']}:{settings.org}:{spec.get('suffix') or ''}:{tag}"
    with transaction(conn):
        conn.execute(
            "INSERT INTO jobs (id, project, model, base_model, init_adapter, training_file, validation_file, suffix,"
            " seed, hyperparameters, method_type, metadata, integrations, status, model_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'validating_files', ?, ?)",
            (
                job_id,
                project,
                spec["model"],
                spec["base_model"],
                spec.get("init_adapter"),
                spec["training_file"],
                spec.get("validation_file"),
                spec.get("suffix"),
                spec["seed"],
                json.dumps(spec["hyperparameters"]),
                spec.get("method_type", "supervised"),
                json.dumps(spec["metadata"]) if spec.get("metadata") is not None else None,
                json.dumps(spec["integrations"]) if spec.get("integrations") is not None else None,
                model_id,
                now(),
            ),
        )
        add_event(conn, job_id, f"Created fine-tuning job: {job_id}")
        what = f"Validating training file: {spec['training_file']}"
        if spec.get("validation_file"):
            what += f" and validation file: {spec['validation_file']}"
        add_event(conn, job_id, what)
        if spec.get("integrations"):
            kinds = ", ".join(sorted({i["type"] for i in spec["integrations"]}))
            add_event(conn, job_id, f"Integrations stored ({kinds}); tunehouse runs offline and sends nothing to them",
                      level="warn")
    return get_job(conn, project, job_id)


def get_job(conn: sqlite3.Connection, project: str | None, job_id: str) -> sqlite3.Row:
    """A job by id within `project` (None: any project, for the worker)."""
    if project is None:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    else:
        row = conn.execute("SELECT * FROM jobs WHERE id = ? AND project = ?", (job_id, project)).fetchone()
    if row is None:
        raise NotFound(f"Could not find fine-tuning job: {job_id}", param="fine_tuning_job_id",
                       code="fine_tuning_job_not_found")
    return row


def list_jobs(
    conn: sqlite3.Connection, project: str, *, after: str | None = None, limit: int = 20,
    metadata: dict[str, str] | None = None,
) -> tuple[list[sqlite3.Row], bool]:
    where, params = "project = ?", [project]
    for key, value in (metadata or {}).items():
        where += " AND json_extract(metadata, '$.' || json_quote(?)) = ?"
        params += [key, value]
    return list_page(conn, "jobs", where, params, after=after, limit=limit)


def list_events(
    conn: sqlite3.Connection, job_id: str, *, after: str | None = None, limit: int = 20
) -> tuple[list[sqlite3.Row], bool]:
    return list_page(conn, "events", "job_id = ?", [job_id], after=after, limit=limit)


def fail_job(conn: sqlite3.Connection, job_id: str, code: str, message: str, param: str | None) -> bool:
    """Mark a non-final job failed with OpenAI's `error` object and an error event; False if it was final."""
    error = json.dumps({"code": code, "message": message, "param": param})
    with transaction(conn):
        cur = conn.execute(
            "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, worker_id = NULL, estimated_finish = NULL"
            " WHERE id = ? AND status NOT IN ('succeeded', 'failed', 'cancelled')",
            (error, now(), job_id),
        )
        if cur.rowcount:
            add_event(conn, job_id, message, level="error")
    return bool(cur.rowcount)


def mark_validated(conn: sqlite3.Connection, job_id: str) -> bool:
    """validating_files -> queued (only once, even if two validators raced)."""
    with transaction(conn):
        cur = conn.execute("UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'validating_files'", (job_id,))
        if cur.rowcount:
            add_event(conn, job_id, "Files validated, moving job to queued state")
    return bool(cur.rowcount)


def cancel_job(conn: sqlite3.Connection, project: str, job_id: str) -> sqlite3.Row:
    with transaction(conn):
        job = get_job(conn, project, job_id)
        if job["status"] in FINAL:
            raise Conflict(f"Job {job_id} is already {job['status']} and cannot be cancelled",
                           param="fine_tuning_job_id", code="job_not_cancellable")
        # A running worker sees this at its next step (control -> "cancel") and stops; it keeps worker_id
        # until then so nobody else claims the job directory.
        conn.execute("UPDATE jobs SET status = 'cancelled', finished_at = ?, estimated_finish = NULL WHERE id = ?",
                     (now(), job_id))
        add_event(conn, job_id, "Fine-tuning job cancelled")
    return get_job(conn, project, job_id)


def pause_job(conn: sqlite3.Connection, project: str, job_id: str) -> sqlite3.Row:
    with transaction(conn):
        job = get_job(conn, project, job_id)
        if job["status"] not in ("queued", "running"):
            raise Conflict(f"Job {job_id} is {job['status']}; only queued or running jobs can be paused",
                           param="fine_tuning_job_id", code="job_not_pausable")
        conn.execute("UPDATE jobs SET status = 'paused', estimated_finish = NULL WHERE id = ?", (job_id,))
        add_event(conn, job_id, "Fine-tuning job paused")
    return get_job(conn, project, job_id)


def resume_job(conn: sqlite3.Connection, project: str, job_id: str) -> sqlite3.Row:
    with transaction(conn):
        job = get_job(conn, project, job_id)
        if job["status"] != "paused":
            raise Conflict(f"Job {job_id} is {job['status']}; only paused jobs can be resumed",
                           param="fine_tuning_job_id", code="job_not_resumable")
        # If the pausing worker has not stopped yet it simply carries on (control sees 'queued' + its own id).
        conn.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", (job_id,))
        add_event(conn, job_id, "Fine-tuning job resumed")
    return get_job(conn, project, job_id)


def jobs_to_validate(conn: sqlite3.Connection) -> list[str]:
    return [r["id"] for r in conn.execute("SELECT id FROM jobs WHERE status = 'validating_files' ORDER BY seq")]
