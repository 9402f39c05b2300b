"""`tunehouse migrate`: retrain OpenAI fine-tuning jobs on a local base model and compare with the old model.

The source is OpenAI (or any OpenAI-compatible server, `--from-base-url`); the target is `--base-url` /
TUNEHOUSE_BASE_URL, or, without either, tunehouse started in this process with a training worker, as the
quickstart does. The work is `tunehouse.migration`; this module parses options, shows progress and prints.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tunehouse.cli.app import app, build_settings, console, err_console
from tunehouse.cli.connection import fail, print_json

OPENAI_URL = "https://api.openai.com/v1"
_NO_KEY = "tunehouse-no-key"  # the SDK insists on a key; a single-user server accepts any


@contextmanager
def source_errors(url: str) -> Iterator[None]:
    """Errors talking to the source while selecting jobs: one line each, exit 1."""
    import openai

    from tunehouse.migration.source import api_message

    try:
        yield
    except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
        fail(f"the source at {url} rejected the API key: {api_message(e)} - pass --from-api-key or set "
             "OPENAI_API_KEY")
    except openai.APITimeoutError:
        fail(f"the source at {url} did not answer in time")
    except openai.APIConnectionError:
        fail(f"cannot reach the source at {url} (check --from-base-url and the network)")
    except openai.APIStatusError as e:
        fail(f"the source at {url} answered {api_message(e)}")


@contextmanager
def open_target(base_url: str | None, api_key: str | None, data_dir: str | None, dry_run: bool) -> Iterator:
    """(client, url) of the target: the given server, or tunehouse with a worker in this process."""
    import openai

    from tunehouse.cli.local_server import ServerUnavailable, local_server

    settings = build_settings(data_dir)
    key = api_key or settings.api_key or _NO_KEY
    url = (base_url or settings.base_url or "").rstrip("/")
    if dry_run:  # a dry run reads the source only: nothing is started or created on the target
        yield None, url or f"in-process tunehouse over {settings.data_dir}"
        return
    if url:
        yield openai.OpenAI(base_url=url, api_key=key, max_retries=1, timeout=600), url
        return
    try:
        with local_server(settings, worker=True) as local_url:
            yield openai.OpenAI(base_url=local_url, api_key=key, max_retries=0, timeout=600), local_url
    except ServerUnavailable as e:
        fail(f"{e}; pass --base-url to migrate to a running tunehouse server")


def _options(model, model_map, files_dir, out, evaluate, holdout_fraction, max_eval_examples, dry_run, poll,
             settings_device, distill_prompts):
    from tunehouse.migration.job_migration import MigrateOptions
    from tunehouse.migration.jobs import parse_model_map

    try:
        mapping = parse_model_map(model_map)
    except ValueError as e:
        fail(str(e))
    if not model and not mapping:
        fail("pass --model LOCAL_BASE (e.g. gemma-3-270m) or --model-map 'SOURCE_MODEL=LOCAL_BASE,...'")
    if files_dir is not None and not files_dir.is_dir():
        fail(f"--files-dir {files_dir}: not a directory")
    if distill_prompts is not None and not distill_prompts.is_file():
        fail(f"--distill-prompts {distill_prompts}: no such file")
    out = out or Path("tunehouse-migrate") / time.strftime("%Y%m%d-%H%M%S")
    return MigrateOptions(model=model, model_map=mapping, files_dir=files_dir, out_dir=out, evaluate=evaluate,
                          holdout_fraction=holdout_fraction, max_eval_examples=max_eval_examples, dry_run=dry_run,
                          poll_seconds=poll, device=settings_device if settings_device in ("cpu", "cuda") else "cpu",
                          distill_prompts=distill_prompts)


@app.command("migrate", rich_help_panel="Evaluation")
def migrate_command(
    job: Annotated[list[str] | None, typer.Option("--job", help="Source job id (repeatable)")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every succeeded source job")] = False,
    suffix: Annotated[str | None, typer.Option("--suffix", help="Only jobs whose model has this suffix")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only jobs created on or after YYYY-MM-DD (UTC)")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Local base model to train on")] = None,
    model_map: Annotated[str | None, typer.Option("--model-map", help="Source base -> local base: "
                                                  "'gpt-4o-mini-2024-07-18=gemma-3-270m,...' (--model is the "
                                                  "fallback; a model matching neither is skipped)")] = None,
    files_dir: Annotated[Path | None, typer.Option("--files-dir", help="Local copies of files the source will "
                                                   "not return, matched by filename and size")] = None,
    evaluate: Annotated[bool | None, typer.Option("--evaluate/--no-evaluate", help="Compare the new model with the "
                                                  "old one (default: when the old model still answers)")] = None,
    max_eval_examples: Annotated[int, typer.Option("--max-eval-examples", min=1, help="Parity on at most this many "
                                                   "examples")] = 100,
    holdout_fraction: Annotated[float, typer.Option("--holdout-fraction", min=0.01, max=0.5, help="Share of the "
                                                    "training file held out for parity when the job has no "
                                                    "validation file")] = 0.1,
    distill_prompts: Annotated[Path | None, typer.Option("--distill-prompts", help="Prompts (chat JSONL or plain "
                                                         "lines) the old model answers; its answers are added to "
                                                         "the training file (see `tunehouse distill`)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would happen; create nothing")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory (default: "
                                             "./tunehouse-migrate/TIME)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"migrations": [...]}')] = False,
    from_base_url: Annotated[str, typer.Option("--from-base-url", help="Source server")] = OPENAI_URL,
    from_api_key: Annotated[str | None, typer.Option("--from-api-key", help="Source API key (env "
                                                     "OPENAI_API_KEY)")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="Target tunehouse server (env TUNEHOUSE_BASE_URL;"
                                                 " default: start one in this process with a worker)")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Target API key (env TUNEHOUSE_API_KEY)")] = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Data dir of the in-process target")] = None,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", min=0.05, help="How often to poll the "
                                                "target job")] = 1.0,
) -> None:
    """Retrain OpenAI fine-tuning jobs here: same files, method, hyperparameters, suffix, seed, metadata."""
    import openai

    from tunehouse.migration.job_migration import migrate_job
    from tunehouse.migration.source import parse_since, select_jobs

    try:
        since_ts = parse_since(since) if since else None
    except ValueError as e:
        fail(str(e))
    if not job and not (all_jobs or suffix or since):
        fail("choose jobs with --job ID (repeatable), --all, --suffix or --since")
    options = _options(model, model_map, files_dir, out, evaluate, holdout_fraction, max_eval_examples, dry_run,
                       poll_seconds, build_settings(data_dir).device, distill_prompts)
    from_url = from_base_url.rstrip("/")
    key = from_api_key or os.environ.get("OPENAI_API_KEY")
    if not key and from_url == OPENAI_URL:
        fail("no API key for OpenAI: pass --from-api-key or set OPENAI_API_KEY")
    source = openai.OpenAI(base_url=from_url, api_key=key or _NO_KEY, max_retries=1, timeout=600)
    with source_errors(from_url):
        jobs, unknown = select_jobs(source, job or [], all_jobs, suffix, since_ts)
    if not jobs and not unknown:
        fail(f"no succeeded source jobs match the selection on {from_url}")
    from tunehouse.migration.outcome import Migration

    results = [Migration(job_id, None).skip(why) for job_id, why in unknown]
    with open_target(base_url, api_key, data_dir, dry_run) as (target, target_url):
        for source_job in jobs:
            if not as_json:
                err_console.print(f"[bold]{escape(source_job.id)}[/] ({escape(source_job.fine_tuned_model or '')})")
            results.append(_migrate_one(migrate_job, source, target, source_job, options, as_json))
    _finish(results, options, {"source": from_url, "target": target_url, "dry_run": dry_run}, as_json)


def _migrate_one(migrate_job, source, target, source_job, options, as_json: bool):
    from tunehouse.cli.eval import make_progress
    from tunehouse.migration.job_migration import Hooks

    last_status = None

    def on_job(job: dict, event: dict | None) -> None:
        nonlocal last_status
        line = f"  {job['id']}: {job['status']}" + (f" - {event['message']}" if event else "")
        if job["status"] != last_status or err_console.is_terminal:
            err_console.print(escape(line), highlight=False)  # one line per status; piped logs stay short
            last_status = job["status"]

    with (nullcontext() if as_json else make_progress()) as progress:
        tasks: dict[str, int] = {}

        def on_eval(label: str, done: int, total: int) -> None:
            if progress is None:
                return
            if label not in tasks:
                tasks[label] = progress.add_task(f"parity {'local' if label == 'model' else 'old'}", total=total)
            progress.update(tasks[label], completed=done)

        return migrate_job(source, target, source_job, options, Hooks(on_job=on_job, on_eval=on_eval))


def _finish(results, options, context: dict, as_json: bool) -> None:
    from tunehouse.migration.outcome import write_report

    paths = write_report(results, options.out_dir, context)
    if as_json:
        print_json({"migrations": [m.to_json() for m in results]})
    else:
        (_print_plans if options.dry_run else _print_results)(results)
        console.print(f"Report: {escape(str(paths['md']))} (and report.json)")
    if not all(m.migrated for m in results):
        raise typer.Exit(1)


def _print_results(results) -> None:
    table = Table(title="Migration", title_justify="left", show_lines=True)
    for col in ("source job", "source model", "new job", "new model", "status", "parity"):
        table.add_column(col, overflow="fold")
    for m in results:
        style = "green" if m.status == "succeeded" else "red"
        table.add_row(m.source_job, m.source_model or "", m.job or "", m.fine_tuned_model or "",
                      f"[{style}]{m.status}[/]", escape(m.headline or m.skipped or "; ".join(m.notes)))
    console.print(table)
    for m in results:
        for line in m.parity + [f"note: {n}" for n in m.notes]:
            console.print(f"{escape(m.source_job)}: {escape(line)}", highlight=False, soft_wrap=True)
    sys.stdout.flush()


def _print_plans(results) -> None:
    from tunehouse.migration.outcome import fmt_seconds, fmt_usd

    table = Table(title="Dry run: nothing was created", title_justify="left", show_lines=True)
    for col in ("source job", "train on", "files", "examples", "tokens", "local time", "at OpenAI", "status"):
        table.add_column(col, overflow="fold")
    for m in results:
        p = m.plan
        if p is None:
            table.add_row(m.source_job, "", "", "", "", "", "", f"[red]skipped[/]: {escape(m.skipped or '')}")
            continue
        files = "\n".join(f"{f['id']} {f['filename']} {f['bytes']} B ({f['origin']})" for f in p["files"])
        cost = f"{fmt_usd(p['openai_cost_usd'])} ({p['openai_base_model']})" + (
            f"\nbilled: {fmt_usd(p['openai_billed_usd'])}" if p["openai_billed_usd"] is not None else "")
        tokens = f"~{p['trained_tokens_estimate']} ({p['n_epochs']} ep)" + (
            f"\nsource: {p['source_trained_tokens']}" if p["source_trained_tokens"] else "")
        holdout = f" (+{p['holdout']} held out)" if p["holdout"] else ""
        table.add_row(m.source_job, f"{p['target_model']}\n{p['method']} {p['hyperparameters']}", escape(files),
                      f"{p['examples']}{holdout}", tokens, fmt_seconds(p["local_training_seconds"]),
                      cost, "[green]would migrate[/]")
    console.print(table)
    for m in results:
        for note in m.notes:
            console.print(f"{escape(m.source_job)}: note: {escape(note)}", highlight=False, soft_wrap=True)
