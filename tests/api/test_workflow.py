"""The seed workflow end to end with the REAL engine on the tiny model: `tunehouse serve` + its worker child."""

from __future__ import annotations

import csv
import io
import re

import openai
import pytest

from tests.api.live import LiveServer, SchemaLog, chat_file, make_data_dir, sdk_client, wait_for
from tests.conftest import TINY

FT_ID = re.compile(rf"ft:{TINY}:tunehouse:seed-run:[a-z0-9]{{8}}")
SERVER_ENV = {"TUNEHOUSE_API_KEYS": "alpha:key-alpha,beta:key-beta"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("workflow")
    srv = LiveServer(make_data_dir(root, tiny_model_dir), worker=True, env=SERVER_ENV).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def log():
    return SchemaLog()


@pytest.fixture(scope="module")
def client(server, log):
    return sdk_client(server, log, "key-alpha")


@pytest.fixture(scope="module")
def finished(client, tmp_path_factory):
    """Upload, create with suffix + validation file + hyperparameters, wait until the job ends."""
    tmp = tmp_path_factory.mktemp("files")
    train = client.files.create(file=chat_file(tmp, 12).open("rb"), purpose="fine-tune")
    valid = client.files.create(file=chat_file(tmp, 4, "valid.jsonl", "wikisql_sample.jsonl").open("rb"),
                                purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train.id, validation_file=valid.id,
                                         suffix="seed-run", seed=3,
                                         hyperparameters={"n_epochs": 2, "batch_size": 4})
    done = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j,
                    timeout=240)
    return done


def test_job_succeeds_with_openai_fields(finished, log):
    assert finished.status == "succeeded", finished.error
    assert FT_ID.fullmatch(finished.fine_tuned_model)
    assert finished.trained_tokens > 0 and finished.finished_at >= finished.created_at
    hp = finished.hyperparameters
    assert (hp.n_epochs, hp.batch_size) == (2, 4) and isinstance(hp.learning_rate_multiplier, float)
    assert log.problems == []


def test_events_tell_the_story_in_openai_words(client, finished, log):
    events = list(client.fine_tuning.jobs.list_events(finished.id, limit=100))
    messages = [e.message for e in events][::-1]  # oldest first
    assert messages[:3] == [f"Created fine-tuning job: {finished.id}",
                            f"Validating training file: {finished.training_file} and validation file: "
                            f"{finished.validation_file}",
                            "Files validated, moving job to queued state"]
    assert "Fine-tuning job started" in messages
    assert "Checkpoint created at step 3" in messages and "Checkpoint created at step 6" in messages
    assert messages[-2:] == [f"New fine-tuned model created: {finished.fine_tuned_model}",
                             "The job has successfully completed"]
    metrics = [e for e in events if e.type == "metrics"]
    assert {e.data["step"] for e in metrics} == set(range(1, 7))
    last = next(e for e in metrics if e.data["step"] == 6)
    assert re.fullmatch(r"Step 6/6: training loss=[\d.e-]+, validation loss=[\d.e-]+"
                        r"(, full validation loss=[\d.e-]+)?", last.message)  # OpenAI adds the last at epoch ends
    assert set(last.data) >= {"step", "train_loss", "valid_loss", "train_mean_token_accuracy", "total_steps"}
    assert log.problems == []


def test_results_file_is_a_csv_of_every_step(client, finished, log):
    file_id, _ = finished.result_files
    meta = client.files.retrieve(file_id)
    assert meta.purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(client.files.content(file_id).text)))
    # OpenAI's columns first, then the full validation passes (epoch ends) it names in its metrics events
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy",
                             "full_valid_loss", "full_valid_mean_token_accuracy"]
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert all(float(r["train_loss"]) > 0 for r in rows) and rows[-1]["valid_loss"] != ""
    assert log.problems == []


def test_the_job_evaluates_its_model_against_the_base_on_the_validation_file(client, finished, log):
    _, report_id = finished.result_files
    assert client.files.retrieve(report_id).filename == "evaluation_report.json"
    report = client.files.content(report_id).json()
    assert report["n"] == 4 and report["model_id"] == finished.fine_tuned_model and report["baseline_id"] == TINY
    events = list(client.fine_tuning.jobs.list_events(finished.id, limit=100))
    (ev,) = [e for e in events if e.message.startswith("Evaluation on 4 validation examples: ")]
    assert ev.data["model"]["loss"] == report["model"]["loss"]
    assert log.problems == []


def test_checkpoints_are_models(client, finished, log):
    ckpts = client.fine_tuning.jobs.checkpoints.list(finished.id).data
    assert [c.step_number for c in ckpts] == [6, 3]  # newest first
    assert ckpts[0].fine_tuned_model_checkpoint == f"{finished.fine_tuned_model}:ckpt-step-6"
    assert ckpts[0].metrics.train_loss > 0 and ckpts[0].metrics.full_valid_loss > 0
    ids = {m.id for m in client.models.list()}
    assert {TINY, finished.fine_tuned_model, ckpts[1].fine_tuned_model_checkpoint} <= ids
    assert client.models.retrieve(ckpts[1].fine_tuned_model_checkpoint).owned_by == "tunehouse"
    assert log.problems == []


def test_resolve_model_gives_base_and_adapter_for_inference(server, finished):
    from tunehouse.store.errors import NotFound
    from tunehouse.store.models import resolve

    settings = server.settings()
    base, adapter = resolve(settings, "alpha", finished.fine_tuned_model)
    assert base == TINY and (adapter / "adapter_config.json").is_file()
    assert resolve(settings, "alpha", f"{finished.fine_tuned_model}:ckpt-step-3")[1].name == "step-3"
    assert resolve(settings, "alpha", TINY) == (TINY, None)
    with pytest.raises(NotFound):
        resolve(settings, "beta", finished.fine_tuned_model)


def test_a_fine_tuned_checkpoint_can_be_trained_further(client, finished, log):
    ckpt = f"{finished.fine_tuned_model}:ckpt-step-3"
    job = client.fine_tuning.jobs.create(model=ckpt, training_file=finished.training_file, suffix="more")
    assert job.model == ckpt
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model="ft:tiny-gemma:tunehouse:x:nope1234", training_file=finished.training_file)
    assert e.value.body["param"] == "model"
    assert log.problems == []


def test_models_are_per_project_and_deletable(client, server, finished, log):
    other = sdk_client(server, log, "key-beta")
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(finished.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        other.models.delete(finished.fine_tuned_model)
    with pytest.raises(openai.BadRequestError):
        client.models.delete(TINY)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("ft:unknown:model:x:12345678")
    deleted = client.models.delete(finished.fine_tuned_model)
    assert deleted.deleted and deleted.id == finished.fine_tuned_model
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(finished.fine_tuned_model)
    assert finished.fine_tuned_model not in {m.id for m in client.models.list()}
    assert log.problems == []


def test_pause_resume_and_cancel_a_running_job(client, finished, tmp_path, log):
    train = client.files.create(file=chat_file(tmp_path, 12).open("rb"), purpose="fine-tune")
    # Long enough (600 steps) that it cannot finish before we act; it is cancelled, so length costs nothing.
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train.id,
                                         hyperparameters={"n_epochs": 50, "batch_size": 1})

    def events():
        return client.fine_tuning.jobs.list_events(job.id, limit=20).data

    def stepped_past(n):
        return lambda: any(e.type == "metrics" and e.data["step"] > n for e in events())

    wait_for(stepped_past(0), timeout=120)
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    paused = wait_for(lambda: next((e for e in events() if e.message.startswith("Paused at step")), None), timeout=60)
    paused_at = int(re.match(r"Paused at step (\d+)/600", paused.message).group(1))
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    resumed = wait_for(lambda: next((e for e in events() if e.message.startswith("Resuming from step")), None),
                       timeout=120)
    assert resumed.message == f"Resuming from step {paused_at}/600"
    wait_for(stepped_past(paused_at), timeout=120)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    assert log.problems == []
