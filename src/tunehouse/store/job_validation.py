"""Job-time file checks: the validating_files step, moving a job to queued or failing it as OpenAI does.

Runs in the API process right after a job is created (and again at startup for jobs a crash left in
validating_files); idempotent, and the status transition is atomic, so running it twice is harmless.
"""

from __future__ import annotations

import logging

from tunehouse.config import Settings
from tunehouse.store.db import Connection, blob_path
from tunehouse.store.job_states import JobStatus
from tunehouse.store.jobs import fail_job, get_job, mark_validated

log = logging.getLogger("tunehouse.store")


# The file format each method trains on, and how the message names it.
EXPECTED_FORMAT = {
    "supervised": ("chat", 'the chat format ({"messages": [...]} per line)'),
    "dpo": ("preference", 'the preference format ({"input": {"messages": [...]}, "preferred_output": [...], '
                          '"non_preferred_output": [...]} per line)'),
}


def _check(settings: Settings, file_id: str, param: str, method: str) -> tuple[str, str] | None:
    """None if the file is trainable by `method`, else (code, message)."""
    from tunehouse.data.validation import MIN_EXAMPLES, UPLOAD_TOLERATED, validate_file

    label = "Training" if param == "training_file" else "Validation"
    path = blob_path(settings, file_id)
    if not path.exists():
        return "file_not_found", f"{label} file {file_id} was deleted before the job could use it"
    report = validate_file(path)
    blocking = report.blocking_errors(UPLOAD_TOLERATED)
    if blocking:
        first = blocking[0]
        where = f" (line {first.line})" if first.line else ""
        return "invalid_file_format", (
            f"{label} file {file_id} has {report.blocking_error_count(UPLOAD_TOLERATED)} format error(s); first: "
            f"{first.code}{where}: {first.message}"
        )
    expected, described = EXPECTED_FORMAT[method]
    if report.format != expected:
        what = "supervised fine-tuning" if method == "supervised" else "DPO fine-tuning (method 'dpo')"
        return "invalid_file_format", (
            f"{label} file {file_id} is in '{report.format}' format; {what} needs {described}"
        )
    if param == "training_file" and report.examples < MIN_EXAMPLES:
        return "invalid_n_examples", (
            f"Training file has {report.examples} example(s), but must have at least {MIN_EXAMPLES} examples"
        )
    if report.examples < 1:
        return "invalid_n_examples", f"{label} file {file_id} has no examples"
    return None


def validate_job_files(conn: Connection, settings: Settings, job_id: str) -> str:
    """validating_files -> queued | failed; returns the job's status afterwards."""
    job = get_job(conn, None, job_id)
    if job["status"] != JobStatus.VALIDATING_FILES:
        return job["status"]
    for param in ("training_file", "validation_file"):
        if not job[param]:
            continue
        try:
            problem = _check(settings, job[param], param, job["method_type"])
        except Exception as e:  # never leave a job stuck in validating_files because a check crashed
            log.exception("job %s: checking %s %s failed", job_id, param, job[param])
            problem = ("validation_error", f"Could not validate {param} {job[param]}: {type(e).__name__}: {e}")
        if problem:
            fail_job(conn, job_id, problem[0], problem[1], param)
            return JobStatus.FAILED
    mark_validated(conn, job_id)
    return get_job(conn, None, job_id)["status"]
