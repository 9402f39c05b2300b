"""`tunehouse eval` (a model vs its baseline on a test set) and `tunehouse quickstart` (the whole loop at once).

`eval` talks to models only through the OpenAI-compatible API. With --base-url (or TUNEHOUSE_BASE_URL) it uses
that server (tunehouse, or any OpenAI-compatible one, so an OpenAI model can be scored the same way); without
either, it starts the tunehouse API in this process on a free loopback port over --data-dir and stops it at the
end.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tunehouse.cli.app import app, build_settings, console, err_console
from tunehouse.cli.connection import fail
from tunehouse.config import DEFAULT_BASE_URL

_NO_KEY = "tunehouse-no-key"  # the SDK insists on a key; a single-user server accepts any
OPTIONAL_METRICS = {"loss", "json"}
ALWAYS_METRICS = {"exact_match", "contains", "patterns", "latency", "tokens"}


def parse_metrics(value: str | None) -> set[str]:
    """--metrics: which optional metrics to compute (loss, json); the cheap ones are always there."""
    if value is None or value.strip() in ("", "all", "auto"):
        return {"loss", "auto-json"}
    names = {v.strip().lower().replace("-", "_") for v in value.split(",") if v.strip()}
    unknown = names - OPTIONAL_METRICS - ALWAYS_METRICS
    if unknown:
        raise typer.BadParameter(
            f"unknown metric(s) {', '.join(sorted(unknown))}; choose from "
            f"{', '.join(sorted(OPTIONAL_METRICS | ALWAYS_METRICS))}", param_hint="--metrics")
    return names


def default_baseline(model: str) -> str | None:
    """A tunehouse fine-tuned id names its base: ft:{base}:{org}:{suffix}:{id}."""
    if model.startswith("ft:") and model.count(":") >= 4:
        return model.split(":")[1]
    return None


@contextmanager
def open_client(base_url: str | None, api_key: str | None, data_dir: str | None) -> Iterator:
    """An `openai.OpenAI` client: on --base-url (or TUNEHOUSE_BASE_URL), else on an in-process tunehouse server."""
    import openai

    from tunehouse.cli.local_server import ServerUnavailable, local_server

    settings = build_settings(data_dir)
    key = api_key or settings.api_key or _NO_KEY
    base_url = base_url or settings.base_url
    if base_url:
        yield openai.OpenAI(base_url=base_url.rstrip("/"), api_key=key, max_retries=1, timeout=600)
        return
    try:
        with local_server(settings) as url:
            yield openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=600)
    except ServerUnavailable as e:
        fail(f"{e}; pass --base-url to evaluate on a running server")


def make_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True)


def run_evaluation(client, model: str, baseline: str, test: Path, options, max_examples: int | None,
                   quiet: bool = False, baseline_client=None, verb: str = "answering"):
    """Evaluate through `client` (the baseline through `baseline_client` when given) with a progress bar
    (`verb`: what the bar says each model is doing); attach the job and its loss curve when known."""
    from tunehouse.eval.comparison import evaluate
    from tunehouse.eval.openai_backend import OpenAIBackend, fetch_results_csv, find_job

    with (nullcontext() if quiet else make_progress()) as progress:
        tasks: dict[str, int] = {}

        def report(label: str, done: int, total: int) -> None:
            if progress is None:
                return
            if label not in tasks:
                tasks[label] = progress.add_task(f"{label:8s} {verb}", total=total)
            progress.update(tasks[label], completed=done)

        baseline_backend = OpenAIBackend(baseline_client) if baseline_client is not None else None
        result = evaluate(OpenAIBackend(client), model, baseline, test, options, max_examples, report,
                          baseline_backend)
    job = find_job(client, model) if model.startswith("ft:") else None
    if job:
        result.job = {k: job.get(k) for k in ("id", "model", "fine_tuned_model", "trained_tokens",
                                               "hyperparameters", "training_file", "validation_file")}
        result.loss_curve = fetch_results_csv(client, job)
    return result


def print_result(result, out_paths: dict | None) -> None:
    from tunehouse.eval.report import all_passed_text, comparison_table, failures_table

    console.print(comparison_table(result))
    failures = failures_table(result)
    if failures is not None:
        console.print(failures)
    else:
        scored = not result.is_preference or result.model_run.metrics.get("preference_accuracy") is not None
        console.print(all_passed_text(result), style="green" if scored else None, markup=False)
    if out_paths:
        console.print(f"Report: {escape(str(out_paths['md']))} (and report.json, "
                      f"{', '.join(p.name for k, p in out_paths.items() if k not in ('md', 'json'))})")


def default_out_dir(model: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("tunehouse-eval") / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', model)[-60:]}-{stamp}"


@app.command("eval", rich_help_panel="Evaluation")
def eval_command(
    model: Annotated[str, typer.Option("--model", "-m", help="The model to evaluate, e.g. ft:gemma-3-270m:...")],
    test: Annotated[Path, typer.Option("--test", "-t", help="Test set: chat JSONL; the last assistant message "
                                       "is the reference, or give per-example `expected_patterns`. Or preference "
                                       "pairs (DPO's format): both outputs of each pair are scored, nothing is "
                                       "generated, giving preference accuracy and margin")],
    baseline: Annotated[str | None, typer.Option("--baseline", "-b", help="Model to compare with (default: the "
                                                 "base of an ft: model)")] = None,
    metrics: Annotated[str | None, typer.Option("--metrics", help="Optional metrics to compute, comma-separated: "
                                                "loss, json (default: loss, and json when every reference is "
                                                "JSON). Exact match, contains, patterns, latency and tokens are "
                                                "always computed")] = None,
    schema: Annotated[Path | None, typer.Option("--schema", help="JSON schema answers must conform to")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory (default: "
                                             "./tunehouse-eval/MODEL-TIME)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"model": {...}, "baseline": {...}, "n": N, '
                                                                  'and "notes": [why] when a metric is n/a}')] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help="An OpenAI-compatible server (env "
                                                 "TUNEHOUSE_BASE_URL; default: start tunehouse in this process over "
                                                 "--data-dir)")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="API key (env TUNEHOUSE_API_KEY)")] = None,
    baseline_base_url: Annotated[str | None, typer.Option("--baseline-base-url", help="Serve the baseline from "
                                                          "this OpenAI-compatible server instead (e.g. an OpenAI "
                                                          "ft: model vs its tunehouse replacement)")] = None,
    baseline_api_key: Annotated[str | None, typer.Option("--baseline-api-key", help="API key of "
                                                         "--baseline-base-url (default: --api-key)")] = None,
    max_examples: Annotated[int | None, typer.Option("--max-examples", "-n", min=1, help="Only the first N")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Answer length cap (default: "
                                                   "twice the reference's length, 32-512)")] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=2.0, help="0 = greedy")] = 0.0,
    template: Annotated[str, typer.Option("--template", help="Chat format for loss scoring: auto, gemma, chatml, "
                                          "none")] = "auto",
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Data dir of the in-process server")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", min=1, help="Examples sent at once "
                                                    "(the server batches them; default: its decoding slots, "
                                                    "TUNEHOUSE_INFERENCE_SLOTS); results do not depend on it")] = None,
) -> None:
    """Compare a model with its baseline on a test set: side-by-side metrics, worst failures, report files."""
    from tunehouse.eval.comparison import EvalError, EvalOptions, Example, load_test_set
    from tunehouse.eval.metrics import check_schema
    from tunehouse.eval.report import write_report

    baseline = baseline or default_baseline(model)
    if not baseline:
        fail("--baseline is required unless --model is a tunehouse ft: model")
    if template not in ("auto", "gemma", "chatml", "none"):
        fail("--template must be one of auto, gemma, chatml, none")
    wanted = parse_metrics(metrics)
    schema_obj = None
    if schema is not None:
        try:
            schema_obj = check_schema(json.loads(schema.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            fail(f"--schema {schema}: {e}")
    try:
        examples = load_test_set(test, max_examples)
    except EvalError as e:
        fail(f"{test}: {e}")
    pairs = not isinstance(examples[0], Example)
    check_json = _check_json(test, examples, wanted, schema_obj, pairs)
    options = EvalOptions(temperature=temperature, max_tokens=max_tokens, check_json=check_json, schema=schema_obj,
                          score_loss="loss" in wanted, template=template,
                          concurrency=concurrency or build_settings(data_dir).inference_slots)
    with open_client(base_url, api_key, data_dir) as client:
        baseline_client = None
        if baseline_base_url:
            baseline_client = client.with_options(base_url=baseline_base_url.rstrip("/"),
                                                  api_key=baseline_api_key or client.api_key)
        try:
            result = run_evaluation(client, model, baseline, test, options, max_examples, quiet=as_json,
                                    baseline_client=baseline_client, verb="scoring pairs" if pairs else "answering")
        except EvalError as e:
            fail(str(e))
    paths = write_report(result, out or default_out_dir(model))
    if as_json:
        sys.stdout.write(json.dumps(result.summary(), indent=2) + "\n")
        return
    print_result(result, paths)


def _check_json(test: Path, examples, wanted: set[str], schema_obj: dict | None, pairs: bool) -> bool:
    """Whether to grade answers as JSON; preference pairs are scored, not answered, so JSON options are refused."""
    if pairs and (schema_obj is not None or "json" in wanted):
        fail(f"{test} holds preference pairs, which are scored, not answered: --schema and --metrics json grade "
             "generated answers (use a chat test file)")
    return not pairs and ("json" in wanted or ("auto-json" in wanted and _all_json(examples)))


def _all_json(examples) -> bool:
    from tunehouse.eval.metrics import parse_json

    refs = [e.reference for e in examples if e.reference is not None]
    return bool(refs) and all(parse_json(r)[0] and r.strip()[:1] in "{[" for r in refs)

@app.command("quickstart", rich_help_panel="Evaluation")
def quickstart_command(
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Where tunehouse keeps its data (default: "
                                                 "TUNEHOUSE_DATA_DIR or ~/.tunehouse)")] = None,
    keep_server: Annotated[bool, typer.Option("--keep-server", help="Keep the server and worker running "
                                              "afterwards (Ctrl-C stops them)")] = False,
) -> None:
    """The whole loop in one command: validate -> fine-tune Gemma 3 270M -> evaluate tuned vs base -> chat."""
    from tunehouse.cli.local_server import ServerUnavailable, local_server
    from tunehouse.eval import quickstart as qs

    t0 = time.monotonic()
    settings = build_settings(data_dir)
    work = settings.data_dir / "quickstart"
    train, heldout = qs.copy_dataset(work)
    console.rule("[bold]tunehouse quickstart")
    console.print(f"Task: teach {qs.BASE_MODEL} a new identity (Gemma-FT by LocalLab) from {_lines(train)} chats; "
                  f"check it on {_lines(heldout)} held-out questions. Data: {escape(str(work))}")
    _validate_step(train, settings)
    _prepare_base(settings)
    try:
        with local_server(settings, worker=True, port=settings.port if keep_server else 0) as url:
            ok = _train_and_evaluate(settings, url, train, heldout, work, t0, keep_server)
    except ServerUnavailable as e:
        fail(str(e))
    if not ok:
        raise typer.Exit(1)


def _train_and_evaluate(settings, url: str, train: Path, heldout: Path, work: Path, t0: float,
                        keep_server: bool) -> bool:
    """Steps 3-6 against the in-process server; True when the tuned model beat its base by enough."""
    import openai

    from tunehouse.cli.connection import Conn
    from tunehouse.cli.follow import follow_job
    from tunehouse.eval import quickstart as qs
    from tunehouse.eval.comparison import EvalError
    from tunehouse.eval.report import write_report

    key = settings.api_key or _NO_KEY
    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=600)
    console.print(f"[bold]3.[/] Server and worker running in this process at {url} (dashboard: "
                  f"{url.removesuffix('/v1')}/)")
    with Conn(url, key).errors():
        with train.open("rb") as f:
            upload = client.files.create(file=f, purpose="fine-tune")
        upload = client.files.wait_for_processing(upload.id, poll_interval=0.5)
        if upload.status != "processed":
            fail(f"the server rejected {train.name}: {upload.status_details}")
        job = client.fine_tuning.jobs.create(
            model=qs.BASE_MODEL, training_file=upload.id, suffix=qs.SUFFIX, seed=qs.SEED,
            method={"type": "supervised", "supervised": {"hyperparameters": qs.HYPERPARAMETERS}})
    console.print(f"[bold]4.[/] Uploaded {upload.id}; fine-tuning job {job.id} with {qs.HYPERPARAMETERS} "
                  "(the same calls as OpenAI's SDK examples, only base_url differs)")
    if follow_job(Conn(url, key), job.id, interval=1.0) != 0:
        fail(f"job {job.id} did not succeed")
    t_trained = time.monotonic()
    with Conn(url, key).errors():
        tuned = client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model
    console.print(f"[bold]5.[/] Evaluating {tuned} against {qs.BASE_MODEL} on the {_lines(heldout)} held-out "
                  "questions (greedy decoding)")
    try:
        options = replace(qs.EVAL_OPTIONS, concurrency=settings.inference_slots)  # the server batches them
        result = run_evaluation(client, tuned, qs.BASE_MODEL, heldout, options, None)
    except EvalError as e:
        fail(str(e))
    paths = write_report(result, work / "report")
    print_result(result, paths)
    ok, gain = qs.verdict(result)
    s = result.summary()
    end = time.monotonic()
    console.print(f"{'[green]PASS[/]' if ok else '[red]FAIL[/]'}: the tuned model states its new identity on "
                  f"{100 * (s['model'][qs.METRIC] or 0):.0f}% of unseen questions vs "
                  f"{100 * (s['baseline'][qs.METRIC] or 0):.0f}% for the base ({gain:+.0f} points; "
                  f"{qs.REQUIRED_GAIN * 100:.0f} needed). Total {(end - t0) / 60:.1f} min "
                  f"(evaluation {(end - t_trained) / 60:.1f} min).")
    _how_to_chat(tuned, settings, url if keep_server else None)
    if keep_server:
        console.print(f"Server and worker running at {url} (Ctrl-C to stop).")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return ok


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _validate_step(train: Path, settings) -> None:
    from tunehouse.data.validation import validate_file
    from tunehouse.eval.quickstart import BASE_MODEL

    report = validate_file(train, model=BASE_MODEL)
    est = report.estimate or {}
    seconds = est.get("training_seconds")
    extra = f", estimated training ~{seconds / 60:.1f} min" if seconds else ""
    warnings = ", ".join(f"{code} x{n}" for code, n in sorted(report.warning_counts.items(), key=lambda kv: -kv[1]))
    console.print(f"[bold]1.[/] Validated {train.name}: {report.examples} examples, "
                  f"{sum(report.error_counts.values())} errors, warnings: {warnings or 'none'}{extra}")
    if not report.ok:
        fail("the quickstart data did not validate: " + "; ".join(e.message for e in report.errors[:3]))


def _prepare_base(settings) -> None:
    """Convert the embedded Gemma once (about a minute and a half) with a visible progress bar."""
    from tunehouse.base_models import ensure_gemma_cache, gemma_cache_dir

    fresh = not (gemma_cache_dir(settings) / "tunehouse_cache.json").is_file()
    with make_progress() as progress:
        task = progress.add_task("Preparing Gemma 3 270M", total=None)

        def report(description: str, done: int, total: int) -> None:
            progress.update(task, description=description, completed=done, total=total)

        ensure_gemma_cache(settings, report)
    console.print("[bold]2.[/] Base model Gemma 3 270M: "
                  f"{'converted to a safetensors cache (first use)' if fresh else 'cache ready'}")


def _how_to_chat(model: str, settings, url: str | None) -> None:
    serve = "" if url else f"tunehouse serve --data-dir {settings.data_dir}   # then, in another terminal:\n"
    # --base-url: chat on the running server; without it chat would load the model again in its own process.
    console.print("\n[bold]Chat with your model[/]")
    console.print(
        f"{serve}tunehouse chat {model} --base-url {url or DEFAULT_BASE_URL} -m \"Who are you?\"\n\n"
        "or from Python with the official openai SDK:\n"
        f"  client = OpenAI(base_url=\"{url or DEFAULT_BASE_URL}\", api_key=\"unused\")\n"
        f"  client.chat.completions.create(model=\"{model}\", messages=[{{\"role\": \"user\", "
        "\"content\": \"Who are you?\"}])", highlight=False, markup=False)
