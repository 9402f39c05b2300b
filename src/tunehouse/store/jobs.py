"""Fine-tuning jobs and their events: creation, the user's cancel/pause/resume, failure and success.

The status flow is the table in store/job_states.py; every status change here is an UPDATE guarded by it.
`paused` (as OpenAI's pause endpoint answers) is entered from queued or running; resume puts the job back to
`queued` and the next worker continues from the job directory's saved state. A running job's worker notices
cancel/pause through `leases.control_state` at its next optimizer step (tunehouse.worker).
"""

from __future__ import annotations

import json
import secrets
import string

from tunehouse.config import Settings
from tunehouse.store.db import Connection, Row, list_page, new_id, now, transaction
from tunehouse.store.errors import Conflict, NotFound
from tunehouse.store.job_states import FINAL, JobStatus, status_guard

S = JobStatus
_MODEL_ALPHABET = string.ascii_lowercase + string.digits


def add_event(
    conn: Connection,
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


def create_job(conn: Connection, settings: Settings, project: str, spec: dict) -> Row:
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
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                S.VALIDATING_FILES,
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


def get_job(conn: Connection, project: str | None, job_id: str) -> Row:
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
    conn: Connection, project: str, *, after: str | None = None, limit: int = 20,
    metadata: dict[str, str] | None = None, status: str | None = None,
) -> tuple[list[Row], bool]:
    """One page of the project's jobs, newest first; optionally only those with `status` (the dashboard's filter)."""
    where, params = "project = ?", [project]
    if status:
        where += " AND status = ?"
        params.append(status)
    # metadata is a JSON object in a TEXT column; the key is a parameter, quoted by the database itself.
    match = ("json_extract(metadata, '$.' || json_quote(?)) = ?" if conn.dialect == "sqlite"
             else "(metadata::jsonb ->> CAST(? AS TEXT)) = ?")
    for key, value in (metadata or {}).items():
        where += f" AND {match}"
        params += [key, value]
    return list_page(conn, "jobs", where, params, after=after, limit=limit)


def list_events(
    conn: Connection, job_id: str, *, after: str | None = None, limit: int = 20
) -> tuple[list[Row], bool]:
    return list_page(conn, "events", "job_id = ?", [job_id], after=after, limit=limit)


def fail_job(conn: Connection, job_id: str, code: str, message: str, param: str | None) -> bool:
    """Mark a non-final job failed with OpenAI's `error` object and an error event; False if it was final."""
    error = json.dumps({"code": code, "message": message, "param": param})
    guard, allowed = status_guard(S.FAILED)
    with transaction(conn):
        cur = conn.execute(
            "UPDATE jobs SET status = ?, error = ?, finished_at = ?, worker_id = NULL, estimated_finish = NULL"
            f" WHERE id = ? AND {guard}",
            (S.FAILED, error, now(), job_id, *allowed),
        )
        if cur.rowcount:
            add_event(conn, job_id, message, level="error")
    return bool(cur.rowcount)


def mark_validated(conn: Connection, job_id: str) -> bool:
    """validating_files -> queued (only once, even if two validators raced)."""
    guard, allowed = status_guard(S.QUEUED, (S.VALIDATING_FILES,))
    with transaction(conn):
        cur = conn.execute(f"UPDATE jobs SET status = ? WHERE id = ? AND {guard}", (S.QUEUED, job_id, *allowed))
        if cur.rowcount:
            add_event(conn, job_id, "Files validated, moving job to queued state")
    return bool(cur.rowcount)


def cancel_job(conn: Connection, project: str, job_id: str) -> Row:
    with transaction(conn):
        job = get_job(conn, project, job_id)
        if job["status"] in FINAL:
            raise Conflict(f"Job {job_id} is already {job['status']} and cannot be cancelled",
                           param="fine_tuning_job_id", code="job_not_cancellable")
        # A running worker sees this at its next step (control -> "cancel") and stops; it keeps worker_id
        # until then so nobody else claims the job directory.
        guard, allowed = status_guard(S.CANCELLED)
        conn.execute(f"UPDATE jobs SET status = ?, finished_at = ?, estimated_finish = NULL WHERE id = ? AND {guard}",
                     (S.CANCELLED, now(), job_id, *allowed))
        add_event(conn, job_id, "Fine-tuning job cancelled")
    return get_job(conn, project, job_id)


def pause_job(conn: Connection, project: str, job_id: str) -> Row:
    with transaction(conn):
        job = get_job(conn, project, job_id)
        if job["status"] not in (S.QUEUED, S.RUNNING):
            raise Conflict(f"Job {job_id} is {job['status']}; only queued or running jobs can be paused",
                           param="fine_tuning_job_id", code="job_not_pausable")
        guard, allowed = status_guard(S.PAUSED, (S.QUEUED, S.RUNNING))
        conn.execute(f"UPDATE jobs SET status = ?, estimated_finish = NULL WHERE id = ? AND {guard}",
                     (S.PAUSED, job_id, *allowed))
        add_event(conn, job_id, "Fine-tuning job paused")
    return get_job(conn, project, job_id)


def resume_job(conn: Connection, project: str, job_id: str) -> Row:
    with transaction(conn):
        job = get_job(conn, project, job_id)
        if job["status"] != S.PAUSED:
            raise Conflict(f"Job {job_id} is {job['status']}; only paused jobs can be resumed",
                           param="fine_tuning_job_id", code="job_not_resumable")
        # If the pausing worker has not stopped yet it simply carries on (control sees 'queued' + its own id).
        guard, allowed = status_guard(S.QUEUED, (S.PAUSED,))
        conn.execute(f"UPDATE jobs SET status = ? WHERE id = ? AND {guard}", (S.QUEUED, job_id, *allowed))
        add_event(conn, job_id, "Fine-tuning job resumed")
    return get_job(conn, project, job_id)


def jobs_to_validate(conn: Connection) -> list[str]:
    rows = conn.execute("SELECT id FROM jobs WHERE status = ? ORDER BY seq", (S.VALIDATING_FILES,))
    return [r["id"] for r in rows]


def job_owner(conn: Connection, job_id: str) -> str | None:
    """The id of the worker holding the job, or None (no job, or nobody holds it)."""
    row = conn.execute("SELECT worker_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else row["worker_id"]


def set_hyperparameters(conn: Connection, job_id: str, worker_id: str, hyperparameters: dict) -> bool:
    """The resolved values replace "auto" once training runs (as OpenAI's jobs show them); owner only."""
    cur = conn.execute("UPDATE jobs SET hyperparameters = ? WHERE id = ? AND worker_id = ?",
                       (json.dumps(hyperparameters), job_id, worker_id))
    return bool(cur.rowcount)


def set_estimated_finish(conn: Connection, job_id: str, worker_id: str, when: int) -> None:
    conn.execute("UPDATE jobs SET estimated_finish = ? WHERE id = ? AND worker_id = ?", (when, job_id, worker_id))


def complete_job(
    conn: Connection,
    job: Row,
    worker_id: str,
    *,
    adapter_ref: str,
    trained_tokens: int,
    hyperparameters: dict,
    result_file_ids: list[str],
) -> bool:
    """-> succeeded: publish the model (its adapter as a blob ref, store/blobs.py), results files, resolved
    hyperparameters and the final events (owner only)."""
    guard, allowed = status_guard(S.SUCCEEDED)
    with transaction(conn):
        cur = conn.execute(
            "UPDATE jobs SET status = ?, fine_tuned_model = ?, finished_at = ?, trained_tokens = ?,"
            " hyperparameters = ?, result_files = ?, estimated_finish = NULL, worker_id = NULL"
            f" WHERE id = ? AND worker_id = ? AND {guard}",
            (S.SUCCEEDED, job["model_id"], now(), trained_tokens, json.dumps(hyperparameters),
             json.dumps(result_file_ids), job["id"], worker_id, *allowed),
        )
        if not cur.rowcount:
            return False
        conn.execute(
            "INSERT INTO models (id, project, job_id, base_model, adapter_dir, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (job["model_id"], job["project"], job["id"], job["base_model"], adapter_ref, now()),
        )
        add_event(conn, job["id"], f"New fine-tuned model created: {job['model_id']}")
        add_event(conn, job["id"], "The job has successfully completed")
    return True
