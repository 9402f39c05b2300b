"""`tunehouse fine_tuning.jobs.<action>` and `tunehouse fine-tuning jobs <action>`: fine-tuning jobs over HTTP.

OpenAI's old CLI spelled commands with dots (`fine_tuning.jobs.create -t FILE -m MODEL`), hosted platforms with
spaces (`together fine-tuning create`); both spellings are registered on the same functions, one per action, so
they cannot drift apart. `-t`/`-v` take an uploaded file id or a local path (uploaded first).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tunehouse.cli.app import app, console, err_console
from tunehouse.cli.connection import (
    AfterOpt,
    ApiKeyOpt,
    BaseUrlOpt,
    Conn,
    JsonOpt,
    LimitOpt,
    connect,
    fail,
    print_json,
    print_rows,
    raw_json,
)
from tunehouse.cli.files import upload_file
from tunehouse.cli.follow import follow_job
from tunehouse.store.job_states import JobStatus

jobs_app = typer.Typer(no_args_is_help=True, help="Create, list, follow and control fine-tuning jobs.")
fine_tuning_app = typer.Typer(no_args_is_help=True, help="Fine-tuning (also spelled fine_tuning.jobs.<action>).")
fine_tuning_app.add_typer(jobs_app, name="jobs")
app.add_typer(fine_tuning_app, name="fine-tuning", rich_help_panel="Server (HTTP)")
app.add_typer(fine_tuning_app, name="fine_tuning", hidden=True)

PollOpt = Annotated[float, typer.Option("--poll-seconds", min=0.05, help="How often follow asks the server")]
JobIdOpt = Annotated[str, typer.Option("-i", "--id", help="Fine-tuning job id (ftjob-...)")]
_JOB_COLUMNS = ["id", "model", "status", "fine_tuned_model", "created_at", "finished_at"]


def register(name: str):
    """One function, every spelling: `fine-tuning jobs NAME`, `fine_tuning jobs NAME`, `fine_tuning.jobs.NAME`."""

    def deco(fn):
        jobs_app.command(name)(fn)
        app.command(name=f"fine_tuning.jobs.{name}", rich_help_panel="Fine-tuning jobs (OpenAI CLI spelling)")(fn)
        if "_" in name:  # list_events is OpenAI's name; list-events is what a shell user types
            jobs_app.command(name.replace("_", "-"), hidden=True)(fn)
        return fn

    return deco


def resolve_file(conn: Conn, client, value: str, purpose: str = "fine-tune") -> str:
    """A file id passes through; an existing local path is uploaded first and its new id returned."""
    path = Path(value).expanduser()
    looks_like_id = value.startswith("file-") and os.sep not in value and "." not in value
    if not looks_like_id and path.is_file():
        obj = upload_file(conn, client, path, purpose)
        err_console.print(f"Uploaded {escape(value)} as {escape(obj['id'])}", highlight=False)
        if obj.get("status") == "error":
            err_console.print(f"[yellow]The server rejected this file:[/] {escape(str(obj.get('status_details')))}")
        return obj["id"]
    if not looks_like_id and (path.suffix or os.sep in value):
        fail(f"{value}: no such file (give a local file to upload or an uploaded file id)")
    return value


def parse_metadata(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep or not key:
            fail(f"--metadata takes KEY=VALUE, got {pair!r}")
        out[key] = val
    return out


@register("create")
def jobs_create(
    training_file: Annotated[str, typer.Option("-t", "--training-file", help="File id or local JSONL path")],
    model: Annotated[str, typer.Option("-m", "--model", help="Base model (or fine-tuned model to continue)")],
    validation_file: Annotated[
        str | None, typer.Option("-v", "--validation-file", help="File id or local JSONL path")
    ] = None,
    suffix: Annotated[str | None, typer.Option("-s", "--suffix", help="Up to 64 characters in the model id")] = None,
    n_epochs: Annotated[int | None, typer.Option("--n-epochs", min=1, help="Default: auto")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Default: auto")] = None,
    learning_rate_multiplier: Annotated[
        float | None, typer.Option("--learning-rate-multiplier", help="> 0; default: auto")
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="supervised (chat files) or dpo (preference pairs)")
    ] = "supervised",
    beta: Annotated[float | None, typer.Option("--beta", help="DPO only: 0 < beta <= 2; default: auto")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Same seed, same data -> same run")] = None,
    metadata: Annotated[list[str] | None, typer.Option("--metadata", help="KEY=VALUE, repeatable")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Then follow the job live until it ends")] = False,
    poll_seconds: PollOpt = 1.0,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a fine-tuning job."""
    if learning_rate_multiplier is not None and not learning_rate_multiplier > 0:
        fail(f"--learning-rate-multiplier must be > 0, got {learning_rate_multiplier}")
    if method not in ("supervised", "dpo"):
        fail(f"--method must be 'supervised' or 'dpo', got {method!r}")
    if beta is not None and method != "dpo":
        fail("--beta applies to --method dpo only")
    conn = connect(base_url, api_key, as_json)
    client = conn.client()
    body: dict = {"model": model, "training_file": resolve_file(conn, client, training_file)}
    if validation_file:
        body["validation_file"] = resolve_file(conn, client, validation_file)
    if suffix is not None:
        body["suffix"] = suffix
    if seed is not None:
        body["seed"] = seed
    if metadata:
        body["metadata"] = parse_metadata(metadata)
    hyper = {"n_epochs": n_epochs, "batch_size": batch_size, "learning_rate_multiplier": learning_rate_multiplier,
             "beta": beta}
    hyper = {k: v for k, v in hyper.items() if v is not None}
    if hyper or method != "supervised":
        body["method"] = {"type": method, method: {"hyperparameters": hyper}}
    with conn.errors():
        job = raw_json(client.fine_tuning.jobs.with_raw_response.create(**body))
    if not follow:
        conn.print(job, title="Fine-tuning job")
        return
    if not as_json:
        conn.print(job, title="Fine-tuning job")
    raise typer.Exit(follow_job(conn, job["id"], poll_seconds))


@register("list")
def jobs_list(
    limit: LimitOpt = 20,
    after: AfterOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List fine-tuning jobs, newest first."""
    conn = connect(base_url, api_key, as_json)
    query = {"limit": limit} | ({"after": after} if after else {})
    with conn.errors():
        page = raw_json(conn.client().fine_tuning.jobs.with_raw_response.list(**query))
    if as_json:
        print_json(page)
    else:
        print_rows(page.get("data", []), _JOB_COLUMNS, "Fine-tuning jobs", "No fine-tuning jobs.")


def _job_action(action: str, job_id: str, base_url: str | None, api_key: str | None, as_json: bool) -> None:
    conn = connect(base_url, api_key, as_json)
    with conn.errors():
        jobs = conn.client().fine_tuning.jobs.with_raw_response
        job = raw_json(getattr(jobs, action)(job_id))
        conn.print(job, title="Fine-tuning job")
        succeeded = job.get("status") == JobStatus.SUCCEEDED
        if action == "retrieve" and not as_json and job.get("validation_file") and succeeded:
            _print_evaluation(conn, job_id)


def _print_evaluation(conn, job_id: str) -> None:
    """The job's evaluation against its base (recorded just before it succeeded), so retrieve shows the gain."""
    events = raw_json(conn.client().fine_tuning.jobs.with_raw_response.list_events(job_id, limit=10)).get("data", [])
    found = next((e for e in events if e["message"].startswith(("Evaluation on", "Evaluation skipped"))), None)
    if found is not None:
        console.print(f"[bold cyan]evaluation[/] {escape(found['message'])}", highlight=False)


@register("retrieve")
def jobs_retrieve(
    job_id: JobIdOpt, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one fine-tuning job."""
    _job_action("retrieve", job_id, base_url, api_key, as_json)


@register("cancel")
def jobs_cancel(
    job_id: JobIdOpt, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Cancel a job (training stops within one step)."""
    _job_action("cancel", job_id, base_url, api_key, as_json)


@register("pause")
def jobs_pause(
    job_id: JobIdOpt, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Pause a running job (it saves a checkpoint and stops)."""
    _job_action("pause", job_id, base_url, api_key, as_json)


@register("resume")
def jobs_resume(
    job_id: JobIdOpt, base_url: BaseUrlOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Resume a paused job from its checkpoint."""
    _job_action("resume", job_id, base_url, api_key, as_json)


@register("list_events")
def jobs_list_events(
    job_id: JobIdOpt,
    limit: LimitOpt = 20,
    after: AfterOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A job's events (the API returns newest first; the table reads oldest first)."""
    conn = connect(base_url, api_key, as_json)
    query = {"limit": limit} | ({"after": after} if after else {})
    with conn.errors():
        page = raw_json(conn.client().fine_tuning.jobs.with_raw_response.list_events(job_id, **query))
    if as_json:
        print_json(page)
    else:
        rows = list(reversed(page.get("data", [])))
        print_rows(rows, ["created_at", "level", "message"], f"Events of {job_id}", "No events.")


@register("checkpoints")
def jobs_checkpoints(
    job_id: JobIdOpt,
    limit: LimitOpt = 10,
    after: AfterOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A job's checkpoints: models you can chat with, with their metrics."""
    conn = connect(base_url, api_key, as_json)
    query = {"limit": limit} | ({"after": after} if after else {})
    with conn.errors():
        page = raw_json(conn.client().fine_tuning.jobs.checkpoints.with_raw_response.list(job_id, **query))
    if as_json:
        print_json(page)
        return
    rows = [
        {
            **c,
            "train_loss": (c.get("metrics") or {}).get("train_loss"),
            "valid_loss": (c.get("metrics") or {}).get("valid_loss"),
        }
        for c in page.get("data", [])
    ]
    cols = ["fine_tuned_model_checkpoint", "step_number", "train_loss", "valid_loss", "created_at"]
    print_rows(rows, cols, f"Checkpoints of {job_id}", "No checkpoints yet.")


@register("follow")
def jobs_follow(
    job_id: JobIdOpt,
    poll_seconds: PollOpt = 1.0,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Follow a job live until it ends (exit 0 only if it succeeded). --json: wait, then print the final job."""
    raise typer.Exit(follow_job(connect(base_url, api_key, as_json), job_id, poll_seconds))
