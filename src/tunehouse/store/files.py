"""Files: rows in the database, bytes on disk under settings.blobs_dir (one blob per file id, written once)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tunehouse.config import Settings
from tunehouse.store.db import Connection, Row, blob_path, list_page, new_id, now, transaction
from tunehouse.store.errors import InvalidRequest, NotFound

log = logging.getLogger("tunehouse.store")
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
# Purposes the server writes itself; clients cannot upload with them.
OUTPUT_PURPOSES = ("assistants_output", "batch_output", "fine-tune-results")
MAX_STATUS_ISSUES = 5


def check_purpose(purpose: str | None) -> str:
    if not purpose:
        raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose",
                             code="missing_required_parameter")
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"Invalid value for 'purpose': '{purpose}'. Supported values are: {', '.join(PURPOSES)}.",
            param="purpose",
            code="invalid_value",
        )
    return purpose


def validate_blob(path: Path) -> tuple[str, str | None, dict]:
    """Run the data toolkit over a fine-tune file: (status, status_details, report JSON).

    Too few examples is not an upload error (OpenAI uploads such a file and fails the job), so only format
    errors turn the file's status to "error".
    """
    from tunehouse.data.validation import UPLOAD_TOLERATED, validate_file

    report = validate_file(path)
    # The row keeps the verdict, not every warning line (those are capped per code but still bulky).
    summary = {k: v for k, v in report.to_json().items() if k in ("ok", "format", "examples", "error_counts",
                                                                   "warning_counts", "tokens_are_estimates")}
    blocking = report.blocking_errors(UPLOAD_TOLERATED)
    n_blocking = report.blocking_error_count(UPLOAD_TOLERATED)
    if not blocking:
        return "processed", None, summary
    shown = "; ".join(f"line {e.line}: {e.message}" if e.line else e.message for e in blocking[:MAX_STATUS_ISSUES])
    more = f" (and {n_blocking - MAX_STATUS_ISSUES} more)" if n_blocking > MAX_STATUS_ISSUES else ""
    return "error", f"{n_blocking} error(s) in the file: {shown}{more}", summary


def add_file(
    conn: Connection,
    settings: Settings,
    *,
    project: str,
    filename: str,
    purpose: str,
    src: Path,
    validate: bool = True,
) -> Row:
    """Adopt the finished upload `src` (renamed into the blob store) as a new file object."""
    file_id = new_id("file-")
    dest = blob_path(settings, file_id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    status, details, report = "processed", None, None
    if purpose == "fine-tune" and validate:
        try:
            status, details, report_json = validate_blob(dest)
            report = json.dumps(report_json)
        except Exception as e:  # a validator bug must not lose the upload; the job-time check reports again
            log.exception("validating upload %s (%s) failed", file_id, filename)
            status, details = "error", f"Validation failed: {type(e).__name__}: {e}"
    try:
        with transaction(conn):
            conn.execute(
                "INSERT INTO files (id, project, filename, purpose, bytes, created_at, status, status_details,"
                " validation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (file_id, project, filename, purpose, dest.stat().st_size, now(), status, details, report),
            )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return get_file(conn, project, file_id)


def get_file(conn: Connection, project: str, file_id: str) -> Row:
    row = conn.execute("SELECT * FROM files WHERE id = ? AND project = ?", (file_id, project)).fetchone()
    if row is None:
        raise NotFound(f"No such File object: {file_id}", param="id")
    return row


def list_files(
    conn: Connection,
    project: str,
    *,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = 10000,
    order: str = "desc",
) -> tuple[list[Row], bool]:
    where, params = "project = ?", [project]
    if purpose:
        where += " AND purpose = ?"
        params.append(purpose)
    return list_page(conn, "files", where, params, after=after, limit=limit, order=order)


def delete_file(conn: Connection, settings: Settings, project: str, file_id: str) -> None:
    with transaction(conn):
        get_file(conn, project, file_id)
        conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
    # Row first, blob second: a crash in between leaves an orphan blob, never a row without bytes.
    blob_path(settings, file_id).unlink(missing_ok=True)


def file_blob(settings: Settings, row: Row) -> Path:
    path = blob_path(settings, row["id"])
    if not path.exists():
        raise NotFound(f"The content of file {row['id']} is missing on disk", param="id")
    return path
