"""The worker with the real engine on the tiny model: success, shutdown re-queue + resume, failures; formatting."""

from __future__ import annotations

import csv
import json
import shutil
import threading

import pytest

from tests.conftest import TINY
from tests.tiny import FIXTURES
from tunehouse.store import db, files, jobs, metrics
from tunehouse.store.job_validation import validate_job_files
from tunehouse.worker.execution import metrics_message, should_log_step, training_config, write_results_csv
from tunehouse.worker.main import run_worker


def _upload(settings, conn, tmp_path, name: str, lines: list[str]) -> str:
    src = tmp_path / name
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files.add_file(conn, settings, project="p", filename=name, purpose="fine-tune", src=src)["id"]


def _queued_job(settings, conn, tmp_path, n_epochs=2, batch_size=4, base=TINY, valid_lines=None):
    lines = (FIXTURES / "identity_chat.jsonl").read_text(encoding="utf-8").splitlines()[:12]
    train_id = _upload(settings, conn, tmp_path, "train.jsonl", lines)
    valid_id = _upload(settings, conn, tmp_path, "valid.jsonl", valid_lines) if valid_lines else None
    spec = {"model": base, "base_model": base, "training_file": train_id, "validation_file": valid_id, "seed": 0,
            "suffix": "w", "metadata": None,
            "hyperparameters": {"n_epochs": n_epochs, "batch_size": batch_size, "learning_rate_multiplier": "auto"}}
    job = jobs.create_job(conn, settings, "p", spec)
    assert validate_job_files(conn, settings, job["id"]) == "queued"
    return job["id"]


def _messages(conn, job_id):
    return [e["message"] for e in jobs.list_events(conn, job_id, limit=1000)[0]][::-1]


def test_run_worker_trains_a_job_to_success(settings, tmp_path):
    conn = db.connect(settings)
    job_id = _queued_job(settings, conn, tmp_path)
    assert run_worker(settings, max_jobs=1) == 1
    job = jobs.get_job(conn, "p", job_id)
    assert job["status"] == "succeeded" and job["fine_tuned_model"].startswith(f"ft:{TINY}:")
    assert job["trained_tokens"] > 0 and job["worker_id"] is None
    msgs = _messages(conn, job_id)
    assert "Fine-tuning job started" in msgs and msgs[-1] == "The job has successfully completed"
    assert sum(m.startswith("Step ") for m in msgs) == 6
    assert conn.execute("SELECT COUNT(*) FROM checkpoints WHERE job_id = ?", (job_id,)).fetchone()[0] == 2


def _result_files(conn, job_id) -> list:
    ids = json.loads(conn.execute("SELECT result_files FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
    return [conn.execute("SELECT * FROM files WHERE id = ?", (i,)).fetchone() for i in ids]


def test_a_job_with_a_validation_file_ends_with_its_evaluation_against_the_base(settings, tmp_path):
    conn = db.connect(settings)
    valid = (FIXTURES / "identity_chat.jsonl").read_text(encoding="utf-8").splitlines()[12:15]
    job_id = _queued_job(settings, conn, tmp_path, valid_lines=valid)
    assert run_worker(settings, max_jobs=1) == 1
    assert jobs.get_job(conn, "p", job_id)["status"] == "succeeded"
    events = jobs.list_events(conn, job_id, limit=1000)[0]
    (ev,) = [e for e in events if e["message"].startswith("Evaluation on 3 validation examples:")]
    data = json.loads(ev["data"])
    assert data["n"] == 3 and data["baseline_model"] == TINY
    assert data["model"]["loss"] < data["baseline"]["loss"]  # trained on the same identity chats
    model = jobs.get_job(conn, "p", job_id)["fine_tuned_model"]
    assert [e["message"] for e in events][:3] == ["The job has successfully completed",  # newest first
                                                  f"New fine-tuned model created: {model}", ev["message"]]
    csv_file, report_file = _result_files(conn, job_id)
    assert (csv_file["filename"], report_file["filename"]) == ("step_metrics.csv", "evaluation_report.json")
    assert report_file["purpose"] == "fine-tune-results"
    report = json.loads(db.blob_path(settings, report_file["id"]).read_text(encoding="utf-8"))
    assert report["n"] == 3 and len(report["examples"]) == 3
    assert report["model"]["loss"] == pytest.approx(data["model"]["loss"])


def test_evaluation_in_a_job_can_be_turned_off(settings, tmp_path):
    conn = db.connect(settings)
    valid = (FIXTURES / "identity_chat.jsonl").read_text(encoding="utf-8").splitlines()[12:15]
    job_id = _queued_job(settings, conn, tmp_path, valid_lines=valid)
    assert run_worker(settings.model_copy(update={"job_eval_examples": 0}), max_jobs=1) == 1
    assert [f["filename"] for f in _result_files(conn, job_id)] == ["step_metrics.csv"]
    assert not any(m.startswith("Evaluat") for m in _messages(conn, job_id))


def test_a_validation_file_that_cannot_be_scored_only_warns(settings, tmp_path):
    conn = db.connect(settings)
    # Valid for training (it has an assistant message), but it ends with the user: no reference answer to score.
    line = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                    {"role": "user", "content": "and?"}]})
    job_id = _queued_job(settings, conn, tmp_path, valid_lines=[line, line])
    assert run_worker(settings, max_jobs=1) == 1
    assert jobs.get_job(conn, "p", job_id)["status"] == "succeeded"
    (warning,) = [e for e in jobs.list_events(conn, job_id, limit=1000)[0] if e["message"].startswith("Evaluation")]
    assert warning["level"] == "warn" and "skipped" in warning["message"]
    assert [f["filename"] for f in _result_files(conn, job_id)] == ["step_metrics.csv"]


def test_shutdown_mid_job_requeues_and_the_next_run_resumes(settings, tmp_path):
    conn = db.connect(settings)
    job_id = _queued_job(settings, conn, tmp_path, n_epochs=3, batch_size=2)
    stop = threading.Event()

    def stop_after_a_few_steps():
        while not stop.is_set():
            if conn_watch.execute("SELECT COUNT(*) FROM job_metrics WHERE job_id = ?", (job_id,)).fetchone()[0] >= 3:
                stop.set()
            stop.wait(0.05)

    conn_watch = db.connect(settings)
    watcher = threading.Thread(target=stop_after_a_few_steps)
    watcher.start()
    run_worker(settings, stop_event=stop)
    watcher.join()
    row = jobs.get_job(conn, "p", job_id)
    assert row["status"] == "queued" and row["worker_id"] is None
    hp = json.loads(row["hyperparameters"])  # resolved as soon as training ran, no longer "auto"
    assert (hp["n_epochs"], hp["batch_size"]) == (3, 2) and isinstance(hp["learning_rate_multiplier"], float)
    run_worker(settings, max_jobs=1)
    assert jobs.get_job(conn, "p", job_id)["status"] == "succeeded"
    msgs = _messages(conn, job_id)
    assert any(m.startswith("Resuming from step") for m in msgs)
    assert "Fine-tuning job resumed by a worker" in msgs
    steps = [r[0] for r in conn.execute("SELECT step FROM job_metrics WHERE job_id = ? ORDER BY step", (job_id,))]
    assert steps == list(range(1, 19))


def test_engine_error_fails_the_job_with_a_clear_message(settings, tmp_path):
    conn = db.connect(settings)
    job_id = _queued_job(settings, conn, tmp_path)
    conn.execute("UPDATE jobs SET base_model = 'vanished-model' WHERE id = ?", (job_id,))
    run_worker(settings, max_jobs=1)
    job = jobs.get_job(conn, "p", job_id)
    assert job["status"] == "failed" and "vanished-model" in job["error"]
    assert _messages(conn, job_id)[-1].startswith("Unknown base model 'vanished-model'")


def test_deleted_training_file_fails_validation(settings, tmp_path):
    conn = db.connect(settings)
    job_id = _queued_job(settings, conn, tmp_path)
    conn.execute("UPDATE jobs SET status = 'validating_files' WHERE id = ?", (job_id,))
    shutil.rmtree(settings.blobs_dir)
    assert validate_job_files(conn, settings, job_id) == "failed"
    assert "file_not_found" in jobs.get_job(conn, "p", job_id)["error"]


def test_metrics_message_matches_openai_wording():
    m = {"step": 12, "total_steps": 300, "train_loss": 0.2512, "valid_loss": 0.371}
    assert metrics_message(m) == "Step 12/300: training loss=0.25, validation loss=0.37"
    assert metrics_message({"step": 1, "total_steps": 2, "train_loss": 3.0}) == "Step 1/2: training loss=3.00"


@pytest.mark.parametrize("total", [6, 100, 1000, 25_000])
def test_metrics_events_are_throttled_to_about_a_hundred(total):
    logged = [s for s in range(1, total + 1) if should_log_step(s, total, False)]
    assert logged[0] == 1 and logged[-1] == total and len(logged) <= 102
    if total <= 100:
        assert len(logged) == total


def test_results_csv_has_openai_columns_and_blank_unmeasured_cells(tmp_path):
    path = tmp_path / "r.csv"
    write_results_csv([{"step": 1, "train_loss": 2.0, "train_mean_token_accuracy": 0.5},
                       {"step": 2, "train_loss": 1.0, "train_mean_token_accuracy": 0.6, "valid_loss": 1.5,
                        "valid_mean_token_accuracy": 0.4}], path)
    rows = list(csv.reader(path.open()))
    assert rows == [["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"],
                    ["1", "2.0", "0.5", "", ""], ["2", "1.0", "0.6", "1.5", "0.4"]]


def test_training_config_comes_from_the_job_row(settings, tmp_path, tiny_model_dir):
    conn = db.connect(settings)
    job = jobs.get_job(conn, "p", _queued_job(settings, conn, tmp_path, n_epochs=3, batch_size=2))
    config = training_config(settings, job)
    assert (config.n_epochs, config.batch_size, config.learning_rate_multiplier) == (3, 2, "auto")
    assert config.output_dir == settings.jobs_dir / job["id"] and config.training_file.is_file()
    assert (config.base_model_dir, config.chat_family) == (tiny_model_dir, "gemma")
    assert config.keep_checkpoints == settings.keep_checkpoints
    assert metrics.job_metrics(conn, job["id"]) == []


@pytest.mark.parametrize("method, shown", [("supervised", {"n_epochs": 2, "batch_size": 4,
                                                           "learning_rate_multiplier": 1.0}),
                                           ("dpo", {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5,
                                                    "beta": 0.1})])
def test_a_running_job_shows_its_resolved_hyperparameters_and_beta_only_for_dpo(settings, tmp_path, method, shown):
    from tunehouse.store import leases
    from tunehouse.training.checkpoints import CONFIG_FILE
    from tunehouse.worker.execution import StoreCallbacks

    conn = db.connect(settings)
    _queued_job(settings, conn, tmp_path)
    job = leases.claim_job(conn, "w1")
    # The engine's resolved config holds every TrainingConfig field: a supervised run has beta "auto" in it too.
    resolved = {"method": method, "beta": shown.get("beta", "auto"), **shown, "lora_r": 16}
    (settings.jobs_dir / job["id"]).mkdir(parents=True)
    (settings.jobs_dir / job["id"] / CONFIG_FILE).write_text(json.dumps(resolved), encoding="utf-8")
    StoreCallbacks(settings, conn, job, "w1", threading.Event())._publish_hyperparameters()
    assert json.loads(jobs.get_job(conn, "p", job["id"])["hyperparameters"]) == shown


def test_an_auto_job_with_a_validation_file_ends_on_its_best_step(settings, tmp_path):
    conn = db.connect(settings)
    valid = (FIXTURES / "wikisql_sample.jsonl").read_text(encoding="utf-8").splitlines()[30:34]
    job_id = _queued_job(settings, conn, tmp_path, n_epochs="auto", valid_lines=valid)
    assert run_worker(settings.model_copy(update={"job_eval_examples": 0}), max_jobs=1) == 1
    assert jobs.get_job(conn, "p", job_id)["status"] == "succeeded"
    (csv_file,) = _result_files(conn, job_id)
    rows = list(csv.DictReader(db.blob_path(settings, csv_file["id"]).open(encoding="utf-8")))
    assert list(rows[0])[:5] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    full = [(int(r["step"]), float(r["full_valid_loss"])) for r in rows if r["full_valid_loss"]]
    best_step, best_loss = min(full, key=lambda p: p[1])
    msgs = _messages(conn, job_id)
    assert f"Fine-tuned model = checkpoint of step {best_step} (best validation loss {best_loss:.4f})" in msgs
    assert any(m.startswith("n_epochs auto: at most 8 epochs") for m in msgs)
    # Every full validation is a metrics event, so `follow` and the events list show it.
    assert sum("full validation loss=" in m for m in msgs) == len(full)
