"""The source side of a migration: which jobs to move, what they were trained with, and their files' bytes.

OpenAI keeps a job's settings readable after its model is gone, but may refuse to return the content of
`fine-tune` files (HTTP 400 "Not allowed to download files of purpose: fine-tune"); then a local copy is
matched by the file object's `filename` and `bytes`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import openai

HYPERPARAMETER_NAMES = ("n_epochs", "batch_size", "learning_rate_multiplier")


class MigrationError(Exception):
    """This job cannot be migrated; the message says why, fit for the user."""


@dataclass
class SourceJob:
    """The parts of a source fine-tuning job that a migration carries over."""

    id: str
    status: str
    model: str
    fine_tuned_model: str | None
    method: str
    hyperparameters: dict
    suffix: str | None
    seed: int | None
    metadata: dict[str, str]
    created_at: int
    training_file: str
    validation_file: str | None
    trained_tokens: int | None = None


@dataclass
class SourceFile:
    """A source file object and, when it could be had, its exact bytes."""

    id: str
    filename: str | None
    bytes: int | None
    content: bytes | None = None
    origin: str | None = None  # "downloaded" or the path of the matched local copy
    problems: list[str] = field(default_factory=list)  # why the content is missing

    def describe(self) -> str:
        size = f"{self.bytes} bytes" if self.bytes is not None else "size unknown"
        return f"{self.id} ({self.filename or 'name unknown'}, {size})"


def api_message(exc: openai.APIStatusError) -> str:
    """The server's error message and HTTP status as one line."""
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body) if isinstance(body, dict) else {}
    message = err.get("message") if isinstance(err, dict) else None
    return f"{' '.join(str(message or exc.message).split())} (HTTP {exc.status_code})"


def parse_suffix(fine_tuned_model: str | None) -> str | None:
    """The suffix segment of `ft:{base}:{org}:{suffix}:{id}` (empty in OpenAI's ids when none was given)."""
    if not fine_tuned_model or not fine_tuned_model.startswith("ft:"):
        return None
    parts = fine_tuned_model.split(":")
    return (parts[3] or None) if len(parts) >= 5 else None


def parse_since(text: str) -> int:
    """YYYY-MM-DD as the Unix time of that day's start in UTC (jobs' created_at are UTC timestamps)."""
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"--since must be a date like 2026-01-31, not '{text}'") from None
    return int(day.timestamp())


def read_job(obj: dict) -> SourceJob:
    """A job object (OpenAI's shape) as a SourceJob; hyperparameters from its method, else the top level."""
    method = obj.get("method") or {}
    kind = method.get("type") or "supervised"
    hp = ((method.get(kind) or {}).get("hyperparameters") or obj.get("hyperparameters") or {})
    if kind == "supervised":
        # Only what tunehouse (and OpenAI) accept; unset means OpenAI never resolved it: keep it "auto".
        hp = {name: ("auto" if hp.get(name) is None else hp[name]) for name in HYPERPARAMETER_NAMES}
    else:
        hp = {k: v for k, v in hp.items() if v is not None}
    suffix = obj.get("suffix") or parse_suffix(obj.get("fine_tuned_model"))
    return SourceJob(
        id=obj["id"], status=obj.get("status") or "unknown", model=obj.get("model") or "",
        fine_tuned_model=obj.get("fine_tuned_model"), method=kind, hyperparameters=hp, suffix=suffix,
        seed=obj.get("seed"), metadata=dict(obj.get("metadata") or {}), created_at=int(obj.get("created_at") or 0),
        training_file=obj.get("training_file") or "", validation_file=obj.get("validation_file"),
        trained_tokens=obj.get("trained_tokens"),
    )


def select_jobs(client: openai.OpenAI, job_ids: list[str], all_jobs: bool, suffix: str | None,
                since: int | None) -> tuple[list[SourceJob], list[tuple[str, str]]]:
    """The selected jobs, and (id, why) for asked-for ids the source does not know.

    With ids, exactly those (any status: planning skips unfinished ones with a reason); otherwise every
    succeeded job. --suffix and --since narrow either set. Auth and connection errors propagate.
    """
    jobs: list[SourceJob] = []
    unknown: list[tuple[str, str]] = []
    if job_ids:
        for job_id in dict.fromkeys(job_ids):
            try:
                jobs.append(read_job(client.fine_tuning.jobs.retrieve(job_id).model_dump()))
            except (openai.NotFoundError, openai.BadRequestError) as e:
                unknown.append((job_id, f"the source has no such job: {api_message(e)}"))
    elif all_jobs or suffix or since is not None:
        # The SDK pages through the whole list; oldest first reads better in the report.
        listed = [read_job(j.model_dump()) for j in client.fine_tuning.jobs.list(limit=100)]
        jobs = sorted((j for j in listed if j.status == "succeeded"), key=lambda j: j.created_at)
    if suffix is not None:
        jobs = [j for j in jobs if j.suffix == suffix]
    if since is not None:
        jobs = [j for j in jobs if j.created_at >= since]
    return jobs, unknown


def find_local_copy(files_dir: Path | None, filename: str | None, size: int | None) -> tuple[Path | None, str]:
    """A file under `files_dir` with this name and exactly this size, or None and why not."""
    if files_dir is None:
        return None, "no --files-dir given"
    if not filename:
        return None, "the source does not say the file's name"
    seen: list[str] = []
    for root, _dirs, names in os.walk(files_dir):
        if filename in names:
            path = Path(root) / filename
            actual = path.stat().st_size
            if size is None or actual == size:
                return path, ""
            seen.append(f"{path} has {actual} bytes")
    if seen:
        return None, f"in {files_dir}: {'; '.join(seen)}, not {size}"
    return None, f"no file named {filename} in {files_dir}"


def fetch_file(client: openai.OpenAI, file_id: str, files_dir: Path | None) -> SourceFile:
    """The file object and its bytes: downloaded, else the local copy matching its name and size."""
    try:
        obj = client.files.retrieve(file_id)
    except (openai.NotFoundError, openai.BadRequestError) as e:
        return SourceFile(file_id, None, None, problems=[f"the source has no such file: {api_message(e)}"])
    source = SourceFile(file_id, obj.filename, obj.bytes)
    try:
        source.content = client.files.content(file_id).read()
        source.origin = "downloaded"
        return source
    except openai.AuthenticationError:
        raise
    except openai.APIStatusError as e:
        source.problems.append(f"download refused: {api_message(e)}")
    path, why = find_local_copy(files_dir, obj.filename, obj.bytes)
    if path is None:
        source.problems.append(why)
        return source
    source.content = path.read_bytes()
    source.origin = str(path)
    return source
