"""`tunehouse validate` and `tunehouse split`: data preparation before spending compute.

Exit codes of validate: 0 trainable, 1 not trainable, 2 usage errors (missing file, unknown model).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import typer
from rich.panel import Panel
from rich.table import Table

from tunehouse.cli.app import app, build_settings, console, err_console

DEFAULT_CONTEXT_LENGTH = 1024  # TrainingConfig.max_length: longer examples are truncated in training


def _usage_error(message: str) -> typer.Exit:
    err_console.print(f"[red]Error:[/red] {message}")
    return typer.Exit(2)


def _count_tokens_for(model: str):
    """A batched counter from the base model's real tokenizer (imported lazily: transformers is slow to import)."""
    from tunehouse.base_models import load_tokenizer
    from tunehouse.catalog import UnknownModelError
    from tunehouse.data.tokens import counter_from_tokenizer

    settings = build_settings()
    try:
        with err_console.status(f"Loading the {model} tokenizer (the first use of the embedded Gemma converts it, "
                                "about a minute)"):
            tokenizer = load_tokenizer(settings, model)
    except UnknownModelError as exc:
        raise _usage_error(str(exc)) from exc
    except (OSError, ValueError) as exc:
        raise _usage_error(f"cannot load the tokenizer of '{model}': {exc}") from exc
    return counter_from_tokenizer(tokenizer)


def _problems_table(title: str, issues, counts: dict[str, int], style: str) -> Table:
    by_code = defaultdict(list)
    for issue in issues:
        by_code[issue.code].append(issue)
    table = Table(title=title, title_justify="left", title_style=style, expand=False)
    table.add_column("code", style=style, no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("first lines")
    table.add_column("first message", overflow="fold")
    for code, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        lines = [str(i.line) for i in by_code[code] if i.line is not None]
        shown = ", ".join(lines[:8]) + (", ..." if n > 8 and lines else "")
        table.add_row(code, str(n), shown or "-", by_code[code][0].message if by_code[code] else "")
    return table


def _fmt(value) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else f"{value:,}"


def _stats_table(stats: dict, estimated: bool) -> Table:
    note = " (estimated: ~4 characters per token; pass --model for exact counts)" if estimated else ""
    table = Table(title=f"Stats{note}", title_justify="left")
    for col in ("per example", "min", "p5", "median", "mean", "p95", "max", "total"):
        table.add_column(col, justify="left" if col == "per example" else "right")
    rows = [("messages", "messages_per_example"), ("tokens", "tokens_per_example"),
            ("trained tokens", "trained_tokens_per_example")]
    if "preferred_tokens_per_example" in stats:  # a preference file: each pair is two sequences
        rows[1] = ("tokens (both sequences)", "tokens_per_example")
        rows += [("preferred output tokens", "preferred_tokens_per_example"),
                 ("non-preferred output tokens", "non_preferred_tokens_per_example")]
    for name, key in rows:
        s = stats[key]
        table.add_row(name, *(_fmt(s[k]) for k in ("min", "p5", "median", "mean", "p95", "max", "total")))
    return table


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


def _estimate_panel(est: dict, estimated: bool, explicit_epochs: bool = False) -> Panel:
    tp = est["throughput"]
    approx = "~" if estimated else ""
    if est.get("early_stopping"):
        held = est.get("holdout_examples")
        where = (f"on {held} training examples held out (seeded; no validation file)" if held
                 else "on the validation file")
        epochs = (f"epochs (auto): at most [bold]{est['n_epochs']}[/bold] (OpenAI's rule), stopping early when "
                  f"validation loss stops improving, measured {where}; tokens and time are upper bounds")
    elif explicit_epochs:
        epochs = f"epochs (--n-epochs): [bold]{est['n_epochs']}[/bold]"
    else:
        epochs = f"epochs (auto, OpenAI's rule): [bold]{est['n_epochs']}[/bold]"
    rows = [
        epochs,
        f"tokens per epoch: {approx}{est['tokens_per_epoch']:,}   total: {approx}{est['total_tokens']:,}   "
        f"trained (assistant) tokens: {approx}{est['supervised_tokens']:,}",
        f"training time here: [bold]~{_duration(est['training_seconds'])}[/bold] at {tp['tokens_per_second']:g} "
        f"tokens/s ({tp['model']} on {tp['device']}{'' if tp['exact_model'] else ', the default figure'})",
        "OpenAI would charge: " + ", ".join(f"{m} ${c:,.2f}" for m, c in est["openai_cost_usd"].items())
        + f"  (as published by OpenAI, checked {est['openai_prices']['checked']})",
    ]
    marks = {"recommended": "[green]recommended size[/green]", "minimum": "[yellow]minimum met[/yellow]",
             "below_minimum": "[red]too small[/red]"}
    rows.append("enough data for: " + "; ".join(f"{g['goal']} ({g['minimum']} min / {g['recommended']}): "
                                                 f"{marks[g['status']]}" for g in est["size_guidance"]))
    return Panel("\n".join(rows), title="Estimates", title_align="left")


def _print_report(report, heading: str) -> None:
    verdict = "[green]trainable[/green]" if not report.errors else "[red]not trainable[/red]"
    n_err, n_warn = sum(report.error_counts.values()), sum(report.warning_counts.values())
    console.print(f"[bold]{heading}[/bold] {report.path}: {report.format} format, {report.examples:,} examples, "
                  f"{n_err:,} error(s), {n_warn:,} warning(s) -> {verdict}")
    if report.error_counts:
        console.print(_problems_table("Errors", report.errors, report.error_counts, "red"))
        if "too_few_examples" in report.error_counts:
            console.print("  note: OpenAI accepts such a file at upload; the fine-tuning job then fails with "
                          "invalid_n_examples.")
    if report.warning_counts:
        console.print(_problems_table("Warnings", report.warnings, report.warning_counts, "yellow"))
    if report.stats["valid_examples"]:
        console.print(_stats_table(report.stats, report.tokens_are_estimates))


@app.command()
def validate(
    file: Path = typer.Argument(..., help="Training file (JSONL)."),
    validation_file: Path | None = typer.Option(None, "--validation-file", help="Validation file (JSONL)."),
    model: str | None = typer.Option(None, "--model", help="Count tokens with this base model's real tokenizer."),
    context_length: int = typer.Option(DEFAULT_CONTEXT_LENGTH, "--context-length", min=1,
                                       help="Training max length; longer examples are truncated."),
    n_epochs: int | None = typer.Option(None, "--n-epochs", min=1,
                                        help="The job's explicit epochs (default: auto); warns when likely to "
                                             "overfit."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (schema in docs/validate.md)."),
) -> None:
    """Check a fine-tuning file: every problem, stats, and estimates of epochs, time and cost."""
    from tunehouse.data.jsonl import JsonlFileError
    from tunehouse.data.validation import validate_file

    for path in (file, validation_file):
        if path is not None and not path.is_file():
            raise _usage_error(f"{path}: {'is a directory' if path.is_dir() else 'no such file'}")
    count = _count_tokens_for(model) if model else None
    settings = build_settings()
    base = model or settings.default_base_model
    try:
        # The base model only picks the throughput figure for the time estimate (aliases resolved first).
        report = validate_file(file, validation_path=validation_file, count_tokens=count,
                               context_length=context_length, model=settings.model_aliases.get(base, base),
                               n_epochs=n_epochs)
    except JsonlFileError as exc:
        raise _usage_error(str(exc)) from exc
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), ensure_ascii=False) + "\n")
    else:
        _print_report(report, "Training file")
        if report.validation is not None:
            _print_report(report.validation, "Validation file")
        if report.estimate and report.stats["valid_examples"]:
            console.print(_estimate_panel(report.estimate, report.tokens_are_estimates, n_epochs is not None))
        console.print("[green]OK: the data is trainable.[/green]" if report.ok
                      else "[red]Not trainable: fix the errors above.[/red]")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def split(
    file: Path = typer.Argument(..., help="JSONL file to split."),
    valid_fraction: float = typer.Option(0.1, "--valid-fraction", help="Share of examples for validation."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same split."),
    out_dir: Path = typer.Option(..., "--out-dir", help="Where train.jsonl and valid.jsonl go."),
) -> None:
    """Split a JSONL file into train.jsonl and valid.jsonl (deterministic; lines are copied byte-exact)."""
    from tunehouse.data.split import split_file

    if not file.is_file():
        raise _usage_error(f"{file}: no such file")
    try:
        train, valid, n_train, n_valid = split_file(file, out_dir, valid_fraction, seed)
    except (ValueError, OSError) as exc:
        raise _usage_error(str(exc)) from exc
    console.print(f"{n_train:,} examples -> {train}\n{n_valid:,} examples -> {valid}")
