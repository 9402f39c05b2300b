"""Run one claimed job: TrainingConfig from the job row, callbacks into the store, the outcome back into the job.

The engine (tunehouse.training.engine.train) owns torch; this module only translates. A job directory under
settings.jobs_dir holds the engine's resumable state, so running a re-queued or resumed job is simply calling
train() again with the same output_dir.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import threading
import time
from pathlib import Path

from tunehouse.config import Settings
from tunehouse.store import jobs, leases
from tunehouse.store.blobs import from_ref, to_ref
from tunehouse.store.checkpoints import add_checkpoint
from tunehouse.store.db import Connection, OperationalError, Row, blob_path, connect, transaction
from tunehouse.store.files import add_file, delete_file
from tunehouse.store.jobs import add_event, fail_job
from tunehouse.store.metrics import job_metrics, record_metrics

log = logging.getLogger("tunehouse.worker")
MAX_METRIC_EVENTS = 100  # per job: long jobs log every k-th step so the event list stays readable
# The fine-tune-results CSV: OpenAI's supervised columns; a DPO job has DPO's metrics instead of token accuracy.
RESULTS_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
DPO_METRICS = ("rewards_accuracy", "rewards_margin", "chosen_logps", "rejected_logps")
DPO_RESULTS_COLUMNS = ("step", "train_loss", *(f"train_{k}" for k in DPO_METRICS), "valid_loss",
                       *(f"valid_{k}" for k in DPO_METRICS))
# Full validation passes (epoch ends; validation-driven auto also in between), named as in OpenAI's metrics
# events. Appended after OpenAI's documented columns and only when a job has them, so readers of the file by
# header (csv.DictReader, pandas) see OpenAI's columns unchanged; `tunehouse eval` marks the best step from them.
FULL_VALID_COLUMNS = ("full_valid_loss", "full_valid_mean_token_accuracy")
DPO_FULL_VALID_COLUMNS = ("full_valid_loss", *(f"full_valid_{k}" for k in DPO_METRICS))


def _num(x: float) -> str:
    return f"{x:.2f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2g}"


def metrics_message(m: dict) -> str:
    text = f"Step {m['step']}/{m['total_steps']}: training loss={_num(m['train_loss'])}"
    if m.get("train_rewards_accuracy") is not None:  # DPO
        text += f", rewards accuracy={_num(m['train_rewards_accuracy'])}"
    if m.get("valid_loss") is not None:
        text += f", validation loss={_num(m['valid_loss'])}"
    if m.get("valid_rewards_accuracy") is not None:
        text += f", validation rewards accuracy={_num(m['valid_rewards_accuracy'])}"
    if m.get("full_valid_loss") is not None:
        text += f", full validation loss={_num(m['full_valid_loss'])}"
    return text


def should_log_step(step: int, total: int, has_valid: bool) -> bool:
    every = max(1, math.ceil(total / MAX_METRIC_EVENTS))
    return step == 1 or step == total or step % every == 0 or has_valid


def training_config(settings: Settings, job: Row):
    """The engine's TrainingConfig for a job; resolves the base to its directory (first use converts the Gemma)."""
    from tunehouse.base_models import model_dir
    from tunehouse.training.config import TrainingConfig

    hp = json.loads(job["hyperparameters"])
    base_dir, family = model_dir(settings, job["base_model"])
    return TrainingConfig(
        base_model=job["base_model"],
        base_model_dir=base_dir,
        chat_family=family,
        training_file=blob_path(settings, job["training_file"]),
        validation_file=blob_path(settings, job["validation_file"]) if job["validation_file"] else None,
        output_dir=settings.jobs_dir / job["id"],
        n_epochs=hp.get("n_epochs", "auto"),
        batch_size=hp.get("batch_size", "auto"),
        learning_rate_multiplier=hp.get("learning_rate_multiplier", "auto"),
        method=job["method_type"],
        beta=hp.get("beta", "auto"),
        seed=job["seed"],
        keep_checkpoints=settings.keep_checkpoints,
        init_adapter=from_ref(settings, job["init_adapter"]) if job["init_adapter"] else None,
        device=settings.device,
        precision=settings.train_precision,
    )


class StoreCallbacks:
    """TrainingCallbacks writing events, metrics and checkpoints to the store; control() reads the job row."""

    def __init__(self, settings: Settings, conn: Connection, job: Row, worker_id: str,
                 stop_event: threading.Event):
        self.settings, self.conn, self.job, self.worker_id, self.stop = settings, conn, job, worker_id, stop_event
        self.started = time.monotonic()
        self.first_step: int | None = None

    def on_event(self, level: str, message: str, data: dict) -> None:
        with transaction(self.conn):
            add_event(self.conn, self.job["id"], message, level=level, data=data)

    def on_metrics(self, metrics: dict) -> None:
        step, total = int(metrics["step"]), int(metrics["total_steps"])
        measured = metrics.get("valid_loss") is not None or metrics.get("full_valid_loss") is not None
        log_it = should_log_step(step, total, measured)
        record_metrics(self.conn, self.job["id"], metrics, metrics_message(metrics) if log_it else None)
        if self.first_step is None:
            self.first_step, self.started = step, time.monotonic()
            self._publish_hyperparameters()
        elif log_it:
            per_step = (time.monotonic() - self.started) / max(step - self.first_step, 1)
            jobs.set_estimated_finish(self.conn, self.job["id"], self.worker_id,
                                     int(time.time() + per_step * (total - step)))

    def _publish_hyperparameters(self) -> None:
        """Once training runs, the job shows the resolved values instead of "auto" (as OpenAI's jobs do)."""
        from tunehouse.training.checkpoints import CONFIG_FILE

        try:
            resolved = json.loads((self.settings.jobs_dir / self.job["id"] / CONFIG_FILE).read_text(encoding="utf-8"))
            keys = ("n_epochs", "batch_size", "learning_rate_multiplier") + (("beta",) if resolved["method"] == "dpo"
                                                                            else ())
            hp = {k: resolved[k] for k in keys}
        except (OSError, ValueError, KeyError) as e:
            log.warning("job %s: resolved hyperparameters not readable: %s", self.job["id"], e)
            return
        jobs.set_hyperparameters(self.conn, self.job["id"], self.worker_id, hp)

    def on_checkpoint(self, checkpoint) -> None:
        add_checkpoint(self.conn, self.job, checkpoint.step, to_ref(self.settings, checkpoint.adapter_dir),
                       checkpoint.metrics, self.settings.keep_checkpoints)

    def control(self) -> str:
        if self.stop.is_set():
            return "pause"  # worker shutting down: save state, the job goes back to the queue
        return leases.control_state(self.conn, self.job["id"], self.worker_id)


def write_results_csv(rows: list[dict], path: Path, method: str = "supervised") -> None:
    """OpenAI's fine-tune-results file: one row per step; empty cells where a metric was not measured."""
    columns = DPO_RESULTS_COLUMNS if method == "dpo" else RESULTS_COLUMNS
    if any(r.get("full_valid_loss") is not None for r in rows):
        columns += DPO_FULL_VALID_COLUMNS if method == "dpo" else FULL_VALID_COLUMNS
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(columns)
        for r in rows:
            values = dict(r, train_accuracy=r.get("train_mean_token_accuracy"))
            out.writerow(["" if values.get(c) is None else values[c] for c in columns])


def _heartbeat_loop(settings: Settings, job_id: str, worker_id: str, done: threading.Event) -> None:
    conn = connect(settings)
    try:
        while not done.wait(settings.heartbeat_seconds):
            try:
                leases.heartbeat(conn, job_id, worker_id)
            except OperationalError as e:  # a busy database must not kill the heartbeat
                log.warning("heartbeat for %s failed: %s", job_id, e)
    finally:
        conn.close()


def _evaluate(settings: Settings, conn: Connection, job: Row, adapter_dir: Path,
              stop_event: threading.Event) -> str | None:
    """The tuned model vs its base on the job's validation file: an event, and report.json as a result file.

    Training already succeeded, so an evaluation that cannot run is a warning event, never a failed job; so is
    one cut short by a shutdown (answering 2 x 100 examples can take minutes; the trained adapter is complete).
    """
    if not job["validation_file"] or settings.job_eval_examples <= 0:
        return None
    from tunehouse.eval.comparison import EvalError
    from tunehouse.eval.job_eval import evaluate_job, evaluation_event

    with transaction(conn):
        add_event(conn, job["id"], f"Evaluating the fine-tuned model against {job['base_model']} on up to "
                                   f"{settings.job_eval_examples} validation examples")
    out_dir = settings.jobs_dir / job["id"] / "evaluation"
    try:
        result = evaluate_job(settings, job["base_model"], adapter_dir, blob_path(settings, job["validation_file"]),
                              out_dir, model_id=job["model_id"], max_examples=settings.job_eval_examples,
                              should_stop=stop_event.is_set)
    except Exception as e:
        if not isinstance(e, EvalError):
            log.exception("job %s: evaluation failed", job["id"])
        with transaction(conn):
            add_event(conn, job["id"], f"Evaluation skipped: {e}", level="warn")
        return None
    message, data = evaluation_event(result)
    with transaction(conn):
        add_event(conn, job["id"], message, data=data)
    report = add_file(conn, settings, project=job["project"], filename="evaluation_report.json",
                      purpose="fine-tune-results", src=out_dir / "report.json", validate=False)
    return report["id"]


def _finish(settings: Settings, conn: Connection, job: Row, worker_id: str, result,
            stop_event: threading.Event) -> str:
    if result.status != "succeeded":
        # paused by the user, or our shutdown: a still-running row goes back to the queue for the next worker
        leases.release_job(conn, job["id"], worker_id, requeue=result.status == "paused")
        return result.status
    by_step = {m["step"]: m for m in job_metrics(conn, job["id"])}
    by_step.update({m["step"]: m for m in result.metrics})
    settings.blobs_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.blobs_dir / f".results-{job['id']}.csv"
    write_results_csv([by_step[s] for s in sorted(by_step)], tmp, job["method_type"])
    results = add_file(conn, settings, project=job["project"], filename="step_metrics.csv",
                       purpose="fine-tune-results", src=tmp, validate=False)
    file_ids = [results["id"]]
    report_id = _evaluate(settings, conn, job, Path(result.adapter_dir), stop_event)
    file_ids += [report_id] if report_id else []
    ok = jobs.complete_job(conn, job, worker_id, adapter_ref=to_ref(settings, result.adapter_dir),
                           trained_tokens=int(result.trained_tokens), hyperparameters=result.hyperparameters,
                           result_file_ids=file_ids)
    if not ok:  # cancelled at the last moment or taken over: the result files belong to nobody
        for file_id in file_ids:
            delete_file(conn, settings, job["project"], file_id)
        leases.release_job(conn, job["id"], worker_id)
        return "lost"
    return "succeeded"


def run_job(settings: Settings, conn: Connection, job: Row, worker_id: str,
            stop_event: threading.Event | None = None) -> str:
    """Train one claimed job to its end; returns succeeded | paused | cancelled | failed | lost."""
    stop_event = stop_event or threading.Event()
    done = threading.Event()
    beat = threading.Thread(target=_heartbeat_loop, args=(settings, job["id"], worker_id, done), daemon=True)
    beat.start()
    try:
        from tunehouse.training.engine import train
        from tunehouse.worker.distributed_run import run_distributed, uses_torchrun

        config, callbacks = training_config(settings, job), StoreCallbacks(settings, conn, job, worker_id, stop_event)
        if uses_torchrun(settings):  # several processes (or machines): torchrun, callbacks served from here
            result = run_distributed(settings, config, callbacks, stop_event)
        else:
            result = train(config, callbacks)
        return _finish(settings, conn, job, worker_id, result, stop_event)
    except Exception as e:
        log.exception("job %s failed", job["id"])
        if jobs.job_owner(conn, job["id"]) == worker_id:
            user_error = isinstance(e, ValueError | LookupError)
            message = str(e) if user_error else f"Training failed with an internal error: {type(e).__name__}: {e}"
            fail_job(conn, job["id"], "training_error" if user_error else "server_error", message, None)
        return "failed"
    finally:
        done.set()
        beat.join(timeout=5)
