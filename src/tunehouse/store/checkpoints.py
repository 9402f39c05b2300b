"""Checkpoint models of a job (`ft:...:ckpt-step-N`): recorded at each epoch end, listed as OpenAI lists them."""

from __future__ import annotations

import json

from tunehouse.store.db import Connection, Row, list_page, new_id, now, transaction
from tunehouse.store.jobs import add_event


def add_checkpoint(
    conn: Connection, job: Row, step: int, adapter_ref: str, metrics: dict, keep: int
) -> str:
    """Record a checkpoint model `ft:...:ckpt-step-N` (its adapter as a blob ref, store/blobs.py); only the newest
    `keep` stay listed, as OpenAI keeps."""
    model_id = f"{job['model_id']}:ckpt-step-{step}"
    with transaction(conn):
        conn.execute("DELETE FROM checkpoints WHERE model_id = ?", (model_id,))  # re-run after a resume
        conn.execute(
            "INSERT INTO checkpoints (id, job_id, project, step, model_id, base_model, adapter_dir, metrics,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (new_id("ftckpt-"), job["id"], job["project"], step, model_id, job["base_model"], adapter_ref,
             json.dumps(metrics), now()),
        )
        conn.execute(
            "DELETE FROM checkpoints WHERE job_id = ? AND seq NOT IN"
            " (SELECT seq FROM checkpoints WHERE job_id = ? ORDER BY step DESC LIMIT ?)",
            (job["id"], job["id"], max(keep, 1)),
        )
        add_event(conn, job["id"], f"Checkpoint created at step {step}", data={"step": step, "model": model_id})
    return model_id


def list_checkpoints(
    conn: Connection, job_id: str, *, after: str | None = None, limit: int = 10
) -> tuple[list[Row], bool]:
    """One page of the job's checkpoints, newest first: (rows, has_more)."""
    return list_page(conn, "checkpoints", "job_id = ?", [job_id], after=after, limit=limit)
