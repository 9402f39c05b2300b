"""Per-step training metrics of a job (the rows of its results CSV) and the metrics events users read."""

from __future__ import annotations

import json

from tunehouse.store.db import Connection, transaction
from tunehouse.store.jobs import add_event

EVENT_KEYS = ("step", "train_loss", "valid_loss", "train_mean_token_accuracy", "valid_mean_token_accuracy",
              "total_steps", "train_rewards_accuracy", "train_rewards_margin", "train_chosen_logps",
              "train_rejected_logps", "valid_rewards_accuracy", "valid_rewards_margin", "valid_chosen_logps",
              "valid_rejected_logps")


def record_metrics(conn: Connection, job_id: str, metrics: dict, event: str | None) -> None:
    """Every step's metrics (for the results CSV) and, when `event` is given, a metrics event for the user."""
    with transaction(conn):
        # A step re-run after a resume replaces its row (upsert syntax both SQLite and PostgreSQL accept).
        conn.execute("INSERT INTO job_metrics (job_id, step, data) VALUES (?, ?, ?)"
                     " ON CONFLICT (job_id, step) DO UPDATE SET data = excluded.data",
                     (job_id, int(metrics["step"]), json.dumps(metrics)))
        if event:
            data = {k: metrics[k] for k in EVENT_KEYS if metrics.get(k) is not None}
            add_event(conn, job_id, event, type="metrics", data=data)


def job_metrics(conn: Connection, job_id: str, after_step: int = -1) -> list[dict]:
    """The job's per-step metrics in step order; `after_step` lets a poller (the dashboard) fetch only new rows."""
    rows = conn.execute("SELECT data FROM job_metrics WHERE job_id = ? AND step > ? ORDER BY step",
                        (job_id, after_step))
    return [json.loads(r["data"]) for r in rows]
