"""Planning and running one migration: the same data, method, hyperparameters, suffix, seed and metadata, on a
local base model of the target server.

A plan is made from the source alone (files fetched and validated locally, the estimate built), so a dry run
creates nothing on the target. `start_job` uploads and creates the job; `wait_for_job` polls it to its end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import openai

from tunehouse.data.split import split_file
from tunehouse.data.validation import MIN_EXAMPLES, Report, validate_file
from tunehouse.migration.source import MigrationError, SourceFile, SourceJob, api_message, fetch_file

# OpenAI's limits on job metadata (tunehouse enforces the same).
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
ENDED = {"succeeded", "failed", "cancelled", "paused"}
HOLDOUT_SEED = 0  # with the source seed unknown, the holdout split still comes out the same on every run


@dataclass
class Plan:
    """Everything needed to start the target job, and what the dry run shows."""

    source: SourceJob
    target_model: str
    training: SourceFile
    validation: SourceFile | None
    training_path: Path  # the bytes that will be uploaded as the training file
    validation_path: Path | None
    test_path: Path | None  # what parity is measured on: the validation file or the holdout
    holdout: int | None  # examples held out of training for parity (no validation file)
    report: Report
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def method(self) -> dict:
        return {"type": self.source.method, self.source.method: {"hyperparameters": self.source.hyperparameters}}


def parse_model_map(text: str | None) -> dict[str, str]:
    """'src=local,src2=local2' -> {src: local}; a malformed entry is a ValueError naming it."""
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"--model-map entry '{item.strip()}' is not SOURCE_MODEL=LOCAL_BASE")
        mapping[src.strip()] = dst.strip()
    return mapping


def resolve_target_model(source_model: str, model: str | None, model_map: dict[str, str]) -> str:
    """The local base for a source base model: its --model-map entry, else --model; MigrationError if neither."""
    # A job that continued an ft: model is mapped by that model's base.
    base = source_model.split(":")[1] if source_model.startswith("ft:") and source_model.count(":") >= 2 else None
    for key in (source_model, base):
        if key and key in model_map:
            return model_map[key]
    if model:
        return model
    raise MigrationError(f"source model {source_model} matches no --model-map entry "
                         f"({', '.join(model_map) or 'none given'}) and no --model fallback was given")


def build_metadata(job: SourceJob, holdout: int | None) -> dict[str, str]:
    """The source metadata plus where it came from, within OpenAI's metadata limits (else MigrationError)."""
    metadata = dict(job.metadata)
    metadata["migrated_from"] = job.id
    metadata["migrated_model"] = job.fine_tuned_model or ""
    if holdout is not None:
        metadata["migration_holdout"] = f"{holdout} examples"
    if len(metadata) > MAX_METADATA_KEYS:
        added = len(metadata) - len(job.metadata)
        raise MigrationError(f"the source job has {len(job.metadata)} metadata keys; with the {added} migration "
                             f"keys that is {len(metadata)}, over the limit of {MAX_METADATA_KEYS}")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise MigrationError(f"metadata key '{key[:30]}...' is over {MAX_METADATA_KEY_CHARS} characters")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE_CHARS:
            raise MigrationError(f"metadata value of '{key}' is not a string of at most "
                                 f"{MAX_METADATA_VALUE_CHARS} characters")
    return metadata


def check_migratable(job: SourceJob) -> None:
    """Reasons known before any file is read: unfinished jobs and methods tunehouse cannot train at all."""
    if job.status != "succeeded":
        raise MigrationError(f"the source job is {job.status}; only succeeded jobs are migrated")
    if job.method == "reinforcement":
        raise MigrationError("reinforcement fine-tuning is not supported by tunehouse")
    if not job.training_file:
        raise MigrationError("the source job names no training file")


def fetch_files(client: openai.OpenAI, job: SourceJob, files_dir: Path | None) -> tuple[SourceFile, SourceFile | None]:
    """Both files with their bytes; MigrationError listing every missing one (id, name, size, why)."""
    training = fetch_file(client, job.training_file, files_dir)
    validation = fetch_file(client, job.validation_file, files_dir) if job.validation_file else None
    missing = [f for f in (training, validation) if f is not None and f.content is None]
    if missing:
        lines = [f"{f.describe()}: {'; '.join(f.problems)}" for f in missing]
        hint = "" if files_dir else " - pass --files-dir with your local copies"
        raise MigrationError(f"missing file(s): {' | '.join(lines)}{hint}")
    return training, validation


def plan_job(client: openai.OpenAI, job: SourceJob, target_model: str, files_dir: Path | None, work_dir: Path,
             evaluate: bool, holdout_fraction: float, device: str = "cpu") -> Plan:
    """Fetch, keep and validate the job's files under `work_dir`; hold out a split for parity when needed."""
    check_migratable(job)
    training, validation = fetch_files(client, job, files_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    train_path = _keep(work_dir, training)
    valid_path = _keep(work_dir, validation) if validation is not None else None
    notes: list[str] = []
    test_path, holdout = valid_path, None
    if evaluate and valid_path is None:
        train_path, test_path, holdout = _hold_out(train_path, work_dir, holdout_fraction, job.seed, notes)
    n_epochs = job.hyperparameters.get("n_epochs")
    report = validate_file(train_path, validation_path=valid_path, model=target_model, device=device,
                           n_epochs=n_epochs if isinstance(n_epochs, int) else None)
    if not report.ok:
        notes.append(f"local validation found {report.blocking_error_count()} error(s); the target may reject "
                     "the file (run `tunehouse validate` on it)")
    return Plan(job, target_model, training, validation, train_path, valid_path, test_path, holdout, report,
                build_metadata(job, holdout), notes)


def _keep(work_dir: Path, source: SourceFile) -> Path:
    # Keep the bytes next to the report: once OpenAI deletes the job, this may be the only copy.
    path = work_dir / f"{source.id}-{Path(source.filename or 'data.jsonl').name}"
    path.write_bytes(source.content or b"")
    return path


def _hold_out(train_path: Path, work_dir: Path, fraction: float, seed: int | None,
              notes: list[str]) -> tuple[Path, Path | None, int | None]:
    """Split off a deterministic held-out set (left out of training) to compare old and new models on.

    The training side keeps at least MIN_EXAMPLES (a job needs them); a file too small for that is trained
    whole and parity is skipped.
    """
    seed = HOLDOUT_SEED if seed is None else seed
    n = sum(1 for line in train_path.read_bytes().splitlines() if line.strip())
    k = min(max(1, round(n * fraction)), n - MIN_EXAMPLES)
    if k < 1:
        notes.append(f"no holdout for parity: the training file has {n} examples and training needs at least "
                     f"{MIN_EXAMPLES}; training on every example, parity skipped")
        return train_path, None, None
    kept, held, n_train, n_held = split_file(train_path, work_dir / "holdout-split", k / n, seed,
                                             names=("train.jsonl", "holdout.jsonl"))
    notes.append(f"the source job has no validation file: {n_held} of {n_train + n_held} training examples are "
                 f"held out (seed {seed}), left out of training and used for parity")
    return kept, held, n_held


def start_job(client: openai.OpenAI, plan: Plan) -> dict:
    """Upload the files and create the job; a refusal by the target is a MigrationError with its reason."""
    training_id = _upload(client, plan.training_path, plan.training.filename)
    validation_id = None
    if plan.validation_path is not None and plan.validation is not None:
        validation_id = _upload(client, plan.validation_path, plan.validation.filename)
    job = plan.source
    try:
        raw = client.fine_tuning.jobs.with_raw_response.create(
            model=plan.target_model, training_file=training_id, validation_file=validation_id, suffix=job.suffix,
            seed=job.seed, metadata=plan.metadata, method=plan.method())
    except openai.BadRequestError as e:
        raise MigrationError(f"the target refused the job: {api_message(e)}") from None
    return json.loads(raw.http_response.text)


def _upload(client: openai.OpenAI, path: Path, filename: str | None) -> str:
    with path.open("rb") as f:
        upload = client.files.create(file=(filename or path.name, f), purpose="fine-tune")
    upload = client.files.wait_for_processing(upload.id, poll_interval=0.5)
    if upload.status != "processed":
        raise MigrationError(f"the target rejected {filename or path.name}: {upload.status_details}")
    return upload.id


def wait_for_job(client: openai.OpenAI, job_id: str, interval: float = 1.0,
                 on_update: Callable[[dict, dict | None], None] | None = None) -> dict:
    """Poll the target job until it ends; `on_update(job, latest_event)` after every poll."""
    while True:
        job = json.loads(client.fine_tuning.jobs.with_raw_response.retrieve(job_id).http_response.text)
        if on_update is not None:
            page = client.fine_tuning.jobs.list_events(job_id, limit=1)
            on_update(job, page.data[0].model_dump() if page.data else None)
        if job["status"] in ENDED:
            return job
        time.sleep(interval)
