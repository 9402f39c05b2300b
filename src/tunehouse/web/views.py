"""What each dashboard page shows, gathered from the same store functions and API objects the /v1 routes use.

No business logic lives here: jobs are the API's `job_object`, events its `event_object`, checkpoints its
`checkpoint_object`; this module only picks what a page needs and formats times for people.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tunehouse.api.fine_tuning import checkpoint_object, event_object, job_object
from tunehouse.config import Settings
from tunehouse.store import files as files_store
from tunehouse.store import jobs as jobs_store
from tunehouse.store.checkpoints import list_checkpoints
from tunehouse.store.db import Connection
from tunehouse.store.errors import NotFound
from tunehouse.store.job_states import FINAL, JobStatus
from tunehouse.store.metrics import job_metrics

PAGE_SIZE = 50
STATUSES = [s.value for s in JobStatus]
EVAL_PREFIX = "Evaluation on "  # the in-job evaluation's event (eval/job_eval.py evaluation_event)


def fmt_time(ts: int | None) -> str:
    if not ts:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


def job_duration(job: dict) -> float | None:
    """Wall time so far: created -> finished, or -> now while the job is not final."""
    if job["finished_at"]:
        return job["finished_at"] - job["created_at"]
    return None if job["status"] in FINAL else time.time() - job["created_at"]


def jobs_page(db: Connection, settings: Settings, project: str, status: str | None,
              after: str | None) -> tuple[list[dict], bool]:
    rows, has_more = jobs_store.list_jobs(db, project, after=after, limit=PAGE_SIZE, status=status)
    # The API's object plus the row's suffix, which OpenAI's job object does not carry.
    return [job_object(r, settings) | {"suffix": r["suffix"]} for r in rows], has_more


def progress(job: dict, metrics: list[dict]) -> dict:
    """Step / total steps from the newest metrics row, and the worker's estimated finish as an ETA."""
    last = metrics[-1] if metrics else {}
    step, total = last.get("step"), last.get("total_steps")
    percent = 100 if job["status"] == "succeeded" else (round(100 * step / total, 1) if step and total else 0)
    eta = job["estimated_finish"]
    return {"step": step, "total": total, "percent": percent,
            "eta": fmt_time(eta) if eta else None,
            "eta_in": fmt_duration(eta - time.time()) if eta else None}


def live_data(db: Connection, settings: Settings, project: str, job_id: str, after_step: int = -1) -> dict:
    """The job page's live JSON: the job, the metrics of steps after `after_step` (the page already has the
    others, so a long job's poll stays small) and the newest events."""
    job = job_object(jobs_store.get_job(db, project, job_id), settings)
    metrics = job_metrics(db, job_id, after_step)
    events, _ = jobs_store.list_events(db, job_id, limit=100)
    last = metrics[-1:] or job_metrics(db, job_id, after_step - 1)[-1:]  # progress needs the newest row
    return {"job": job, "metrics": metrics, "events": [event_object(e) for e in events],
            "progress": progress(job, last), "final": job["status"] in FINAL}


def evaluation(events: list[dict]) -> dict | None:
    """The in-job evaluation (base vs tuned) from its event: rows of (metric, tuned, base)."""
    event = next((e for e in events if e["message"].startswith(EVAL_PREFIX) and "model" in e["data"]), None)
    if event is None:
        return None
    tuned, base = event["data"]["model"], event["data"].get("baseline") or {}
    rows = [(k, tuned.get(k), base.get(k)) for k in tuned if isinstance(tuned.get(k), int | float | type(None))]
    return {"message": event["message"], "baseline_model": event["data"].get("baseline_model"), "rows": rows}


def result_files(db: Connection, project: str, file_ids: list[str]) -> list[dict]:
    out = []
    for file_id in file_ids:
        try:
            row = files_store.get_file(db, project, file_id)
            out.append({"id": file_id, "filename": row["filename"], "bytes": row["bytes"]})
        except NotFound:  # deleted by the user since; say so rather than hide it
            out.append({"id": file_id, "filename": None, "bytes": None})
    return out


def job_detail(db: Connection, settings: Settings, project: str, job_id: str) -> dict:
    data = live_data(db, settings, project, job_id)
    data["job"]["suffix"] = jobs_store.get_job(db, project, job_id)["suffix"]
    ckpts, _ = list_checkpoints(db, job_id, limit=100)
    data["checkpoints"] = [checkpoint_object(c) for c in ckpts]
    data["evaluation"] = evaluation(data["events"])
    data["result_files"] = result_files(db, project, data["job"]["result_files"])
    data["method_hyperparameters"] = data["job"]["method"][data["job"]["method"]["type"]]["hyperparameters"]
    return data


def file_report(db: Connection, settings: Settings, project: str, file_id: str) -> dict:
    """A file and, for fine-tune files, the full validation report (errors by line, warnings, stats, estimate)."""
    from tunehouse.data.validation import validate_file

    row = files_store.get_file(db, project, file_id)
    report = None
    if row["purpose"] == "fine-tune":
        # The same validator the upload ran (store.files.validate_blob), here with every issue it keeps.
        report = validate_file(files_store.file_blob(settings, row)).to_json()
    return {"file": dict(row), "report": report}
