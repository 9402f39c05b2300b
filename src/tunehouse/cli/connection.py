"""What every client command shares: the server connection (`Conn`), its options, error lines and printing.

Every client command talks to a tunehouse server through the official `openai` SDK, exactly as user code would,
so the CLI is also a living check of API compatibility. Human output is rich tables; `--json` prints the server's
JSON object unchanged (read from the raw response, not re-serialised from SDK models). Errors are one line and
exit 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from tunehouse.cli.app import build_settings, console, err_console
from tunehouse.config import DEFAULT_BASE_URL

BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", help="Server URL (env TUNEHOUSE_BASE_URL; default http://127.0.0.1:8000/v1)"),
]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key (env TUNEHOUSE_API_KEY)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the server's exact JSON object (for scripts)")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=10000, help="At most this many items")]
AfterOpt = Annotated[str | None, typer.Option("--after", help="Cursor: list items after this id")]

# Without a key the SDK refuses to build a client; a server in single-user mode accepts any key.
_NO_KEY = "tunehouse-no-key"
_TIME_FIELDS = {"created_at", "finished_at", "estimated_finish", "created", "expires_at"}


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr, then exit; never a traceback."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def format_api_error(exc: Exception) -> str:
    """An openai.APIStatusError as one line: message, HTTP status, OpenAI error code and param."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    # The SDK unwraps {"error": {...}} into .body; anything else (a proxy's HTML page) is shown as text.
    if isinstance(body, dict) and "message" in body:
        message, code, param = str(body.get("message")), body.get("code") or body.get("type"), body.get("param")
    else:
        response = getattr(exc, "response", None)
        text = response.text if response is not None else str(exc)
        message, code, param = " ".join(text.split())[:300] or "empty response", None, None
    details = [f"HTTP {status}"] + ([f"code: {code}"] if code else []) + ([f"param: {param}"] if param else [])
    line = f"{message} ({', '.join(details)})"
    if status == 401:
        line += " - pass --api-key or set TUNEHOUSE_API_KEY"
    return " ".join(line.split())


@dataclass
class Conn:
    """Where the server is and how to print: built once per command from its options and Settings."""

    base_url: str
    api_key: str | None
    as_json: bool = False

    def client(self):
        import openai

        # No retries: a CLI should fail fast with a hint, not back off silently against a stopped server.
        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key or _NO_KEY, max_retries=0)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Map transport and API errors to one line and exit code 1."""
        import openai

        try:
            yield
        except openai.APITimeoutError:
            fail(f"the tunehouse server at {self.base_url} did not answer in time")
        except openai.APIConnectionError:
            fail(
                f"no tunehouse server at {self.base_url} - start one with `tunehouse serve` "
                "(or point --base-url / TUNEHOUSE_BASE_URL at a running one)"
            )
        except openai.APIStatusError as exc:
            line = format_api_error(exc)
            body = exc.body if isinstance(exc.body, dict) else {}
            if exc.status_code == 404 and "message" not in body and not self.base_url.endswith("/v1"):
                line += f" - tunehouse serves its API under /v1: try --base-url {self.base_url}/v1"
            fail(line)

    def print(self, obj: Any, title: str | None = None) -> None:
        """--json: the exact object; otherwise a key/value table."""
        if self.as_json:
            print_json(obj)
        else:
            print_object(obj, title)


def connect(base_url: str | None, api_key: str | None, as_json: bool = False) -> Conn:
    try:
        settings = build_settings()
    except Exception as exc:  # a malformed TUNEHOUSE_* variable must not end in a pydantic traceback
        fail(f"bad TUNEHOUSE_* environment: {' '.join(str(exc).split())}")
    return Conn((base_url or settings.base_url or DEFAULT_BASE_URL).rstrip("/"), api_key or settings.api_key, as_json)


def raw_json(raw_response) -> Any:
    """The body of a `with_raw_response` call, exactly as the server sent it."""
    return raw_response.http_response.json()


def print_json(obj: Any) -> None:
    # Plain stdout, not rich: scripts parse this, so no colours, wrapping or markup handling.
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fmt_time(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def fmt_value(key: str, value: Any) -> str:
    if key in _TIME_FIELDS:
        return fmt_time(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if key == "bytes" and isinstance(value, int):
        return fmt_bytes(value)
    return "" if value is None else str(value)


def fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def print_object(obj: dict, title: str | None = None) -> None:
    table = Table(show_header=False, title=title, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in obj.items():
        if value is None or value == [] or value == {}:
            continue  # unset optional fields are noise in a human view; --json shows everything
        table.add_row(key, escape(fmt_value(key, value)))
    console.print(table)


def print_rows(rows: list[dict], columns: list[str], title: str, empty: str) -> None:
    if not rows:
        console.print(empty)
        return
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        # Ids are what users copy into the next command: never fold them across lines.
        table.add_column(col, overflow="fold", no_wrap=i == 0 or col in _TIME_FIELDS)
    for row in rows:
        table.add_row(*(escape(fmt_value(col, row.get(col))) for col in columns))
    console.print(table)
