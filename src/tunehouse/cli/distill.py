"""`tunehouse distill`: a teacher model's answers to a prompts file, written as a training file (resumable).

The teacher is any OpenAI-compatible server (OpenAI by default, e.g. an `ft:` model before its base shuts
down). Run the same command again after an interruption or a partial run: only unanswered prompts are asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tunehouse.cli.app import app, console, err_console
from tunehouse.cli.connection import fail, print_json

OPENAI_BASE_URL = "https://api.openai.com/v1"
_NO_KEY = "tunehouse-no-key"  # the SDK insists on a key; a single-user tunehouse teacher accepts any
_LISTED = 10  # rejected/failed lines shown in the human summary (--json has them all)


@contextmanager
def progress_bar(model: str, show: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich bar on stderr (terminal only) fed by distill's on_progress(done, total)."""
    if not show:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(f"asking {escape(model)}", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_summary(summary) -> None:
    console.print(f"prompts {summary.total}: asked {summary.asked}, already done {summary.resumed} (resumed), "
                  f"written {summary.written}, rejected {len(summary.rejected)}, failed {len(summary.failed)}, "
                  f"retries {summary.retries}" + (f", cut by --max-tokens {summary.truncated}"
                                                  if summary.truncated else ""), highlight=False)
    for label, items in (("rejected", summary.rejected), ("failed", summary.failed)):
        for item in items[:_LISTED]:
            console.print(f"  {label}: line {item.line}: {escape(item.why)}", highlight=False)
        if len(items) > _LISTED:
            console.print(f"  ... and {len(items) - _LISTED} more {label} (see --json)", highlight=False)
    console.print(f"Wrote {summary.written} training chats to {escape(summary.out)}", highlight=False)
    if not summary.complete:
        console.print(f"[yellow]{summary.total - summary.written} prompt(s) have no answer yet: run the same "
                      "command again to ask only those.[/]")


def error_line(exc) -> str:
    line = str(exc)
    if exc.status == 401:
        line += " - pass --from-api-key or set OPENAI_API_KEY"
    if exc.summary is not None and exc.summary.written:
        line += f" ({exc.summary.written} answers saved in {exc.summary.out}; run again to resume)"
    return line


@app.command("distill", rich_help_panel="Migration")
def distill_command(
    from_model: Annotated[str, typer.Option("--from-model", help="Teacher model, e.g. ft:gpt-4o-mini-2024-07-18:"
                                            "org::abc123")],
    prompts: Annotated[Path, typer.Option("--prompts", help="Prompts: chat JSONL (each example's messages before "
                                          "its last assistant message) or text, one user message per line")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Training file to write (chat JSONL); progress is kept "
                                      "in OUT.progress.jsonl so a rerun asks only the rest")],
    from_base_url: Annotated[str, typer.Option("--from-base-url", help="The teacher's OpenAI-compatible "
                                               "server")] = OPENAI_BASE_URL,
    from_api_key: Annotated[str | None, typer.Option("--from-api-key", envvar="OPENAI_API_KEY", show_envvar=True,
                                                     help="The teacher server's API key")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256, help="Requests in flight")] = 4,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, max=100, help="Retries per request on 429, "
                                             "5xx and connection errors (exponential backoff, Retry-After "
                                             "honoured)")] = 5,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Longest answer in tokens "
                                                   "(default: the teacher's)")] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=2.0, help="Sampling "
                                               "temperature")] = 0.0,
    system: Annotated[str | None, typer.Option("--system", help="System prompt prepended to prompts that have "
                                               "none (plain lines never do)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary object: asked, resumed, written, "
                                          "rejected, failed, out")] = False,
) -> None:
    """Ask a teacher model every prompt and write its answers as training chats (resumes where it stopped)."""
    import openai

    from tunehouse.migration.distill import DistillError, Teacher, distill

    base_url = from_base_url.rstrip("/")
    client = openai.OpenAI(base_url=base_url, api_key=from_api_key or _NO_KEY, max_retries=0)
    teacher = Teacher(from_model, temperature=temperature, max_tokens=max_tokens, max_retries=max_retries)
    try:
        with progress_bar(from_model, show=not as_json and err_console.is_terminal) as on_progress:
            summary = distill(client, teacher, prompts, out, system=system, concurrency=concurrency,
                              on_progress=on_progress)
    except DistillError as exc:
        fail(error_line(exc))
    except KeyboardInterrupt:
        fail(f"interrupted: the answers so far are saved; run the same command again to resume (output: {out})",
             code=130)
    if as_json:
        print_json(summary.to_json())
    else:
        print_summary(summary)
    raise typer.Exit(0 if summary.complete else 1)
