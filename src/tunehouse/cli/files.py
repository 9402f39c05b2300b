"""`tunehouse files ...`: upload (streamed, with a progress bar), list, retrieve, delete, download content."""

from __future__ import annotations

import io
import os
import sys
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
    fmt_bytes,
    print_json,
    print_rows,
    raw_json,
)

_UPLOAD_BAR_MIN_BYTES = 1024 * 1024


class _ProgressReader(io.RawIOBase):
    """A file wrapper that advances a progress bar as httpx streams the upload in chunks."""

    def __init__(self, f, advance):
        self._f, self._advance = f, advance

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        self._advance(len(chunk))
        return chunk

    def fileno(self) -> int:
        return self._f.fileno()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


def upload_file(conn: Conn, client, path: Path, purpose: str) -> dict:
    """Stream a local file to POST /v1/files (progress bar for large files on a terminal); the file object."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    if not path.is_file():
        fail(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
    size = path.stat().st_size
    show_bar = console.is_terminal and not conn.as_json and size >= _UPLOAD_BAR_MIN_BYTES
    with (
        path.open("rb") as f,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
            disable=not show_bar,
        ) as progress,
    ):
        task = progress.add_task(f"Uploading {path.name}", total=size)
        reader = _ProgressReader(f, lambda n: progress.advance(task, n))
        with conn.errors():
            raw = client.files.with_raw_response.create(file=(path.name, reader, "application/jsonl"), purpose=purpose)
    return raw_json(raw)


files_app = typer.Typer(no_args_is_help=True, help="Upload, list, inspect and delete files.")
app.add_typer(files_app, name="files", rich_help_panel="Server (HTTP)")
_FILE_COLUMNS = ["id", "filename", "bytes", "purpose", "status", "created_at"]


@files_app.command("create")
def files_create(
    file: Annotated[Path, typer.Option("-f", "--file", help="Local file to upload")],
    purpose: Annotated[str, typer.Option("-p", "--purpose", help="fine-tune, batch, ...")] = "fine-tune",
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a file (JSONL for fine-tune); prints the file object."""
    conn = connect(base_url, api_key, as_json)
    obj = upload_file(conn, conn.client(), file, purpose)
    conn.print(obj, title="File")
    if not as_json and obj.get("status") == "error":
        err_console.print(f"[yellow]The server rejected this file:[/] {escape(str(obj.get('status_details')))}")


@files_app.command("list")
def files_list(
    purpose: Annotated[str | None, typer.Option("-p", "--purpose", help="Only files with this purpose")] = None,
    limit: LimitOpt = 100,
    after: AfterOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List uploaded files, newest first."""
    conn = connect(base_url, api_key, as_json)
    query = {k: v for k, v in {"purpose": purpose, "limit": limit, "after": after}.items() if v is not None}
    with conn.errors():
        page = raw_json(conn.client().files.with_raw_response.list(**query))
    if as_json:
        print_json(page)
    else:
        print_rows(page.get("data", []), _FILE_COLUMNS, "Files", "No files.")


@files_app.command("retrieve")
def files_retrieve(
    file_id: Annotated[str, typer.Option("-i", "--id", help="File id")],
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one file object."""
    conn = connect(base_url, api_key, as_json)
    with conn.errors():
        conn.print(raw_json(conn.client().files.with_raw_response.retrieve(file_id)), title="File")


@files_app.command("delete")
def files_delete(
    file_id: Annotated[str, typer.Option("-i", "--id", help="File id")],
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a file."""
    conn = connect(base_url, api_key, as_json)
    with conn.errors():
        conn.print(raw_json(conn.client().files.with_raw_response.delete(file_id)), title="Deleted")


@files_app.command("content")
def files_content(
    file_id: Annotated[str, typer.Option("-i", "--id", help="File id")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout")] = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Download a file's exact bytes."""
    conn = connect(base_url, api_key)
    if output is not None and not output.parent.is_dir():
        fail(f"{output.parent}: no such directory")
    # Streamed to a temporary name and renamed, so a failed download never leaves a truncated OUT.
    part = None if output is None else output.with_name(f".{output.name}.part")
    written = 0
    try:
        with conn.errors(), conn.client().files.with_streaming_response.content(file_id) as response:
            sink = sys.stdout.buffer if part is None else part.open("wb")
            try:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    written += len(chunk)
            finally:
                sink.flush() if part is None else sink.close()
        if part is not None:
            os.replace(part, output)
            err_console.print(f"Wrote {fmt_bytes(written)} to {escape(str(output))}")
    except OSError as exc:
        fail(f"cannot write {output or 'stdout'}: {exc.strerror or exc}")
    finally:
        if part is not None:
            part.unlink(missing_ok=True)
