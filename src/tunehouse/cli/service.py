"""`tunehouse serve`, `tunehouse worker`, `tunehouse keys create/list/revoke`: running the service.

`serve` runs the API (uvicorn) and, unless --no-worker, one training worker in a child process, so one
command is enough. Without API keys it is single-user: loopback only, any key accepted; binding another
address without keys is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.panel import Panel
from rich.table import Table

from tunehouse.cli.app import app, build_settings, console, err_console

keys_app = typer.Typer(no_args_is_help=True, help="API keys of this server (stored hashed in its database).")
app.add_typer(keys_app, name="keys", rich_help_panel="Service")
DataDir = Annotated[
    str | None, typer.Option("--data-dir", help="Data dir (env TUNEHOUSE_DATA_DIR; default ~/.tunehouse)")
]


def _loopback(host: str) -> bool:
    from tunehouse.api.deps import is_loopback

    return is_loopback(host)


def _shown_url(url: str) -> str:
    """The database URL without its password, for the console."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _start_worker_child(data_dir: str) -> subprocess.Popen:
    # A separate process: training holds the GIL and gigabytes; the API must stay responsive.
    env = dict(os.environ, TUNEHOUSE_WORKER_CHILD="1")  # the child asks Linux to stop it when we die
    return subprocess.Popen([sys.executable, "-m", "tunehouse.worker", "--data-dir", data_dir], env=env)


@app.command(rich_help_panel="Service")
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (env TUNEHOUSE_HOST; default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env TUNEHOUSE_PORT; default 8000)")] = None,
    data_dir: DataDir = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="API only; run `tunehouse worker` yourself")] = False,
) -> None:
    """Serve the OpenAI-compatible API under /v1 (plus one training worker)."""
    import uvicorn

    from tunehouse.api.app import create_app
    from tunehouse.store.keys import keys_configured

    settings = build_settings(data_dir)
    host = host or settings.host
    port = port or settings.port
    if not keys_configured(settings):
        if not _loopback(host):
            err_console.print(f"[red]Refusing to bind {host}: no API keys are configured, so anyone who can reach "
                              "this address could use the server. Create one with `tunehouse keys create` (or set "
                              "TUNEHOUSE_API_KEYS) or bind 127.0.0.1.[/red]")
            raise typer.Exit(2)
        console.print(Panel("[bold yellow]SINGLE-USER MODE[/bold yellow]: no API keys configured. Serving loopback "
                            "clients only and accepting ANY API key.\nCreate keys with `tunehouse keys create` to use "
                            "projects and to serve other machines.", border_style="yellow"))
    console.print(f"tunehouse API on http://{host}:{port}/v1 - database {_shown_url(settings.db_url)}, blobs in "
                  f"{settings.blob_root}")
    console.print(f"Dashboard: http://{host}:{port}/")
    worker = None if no_worker else _start_worker_child(str(settings.data_dir))
    # uvicorn shuts down on SIGTERM, then re-raises it under the handler it found; by default that killed us
    # before `finally` could stop the worker (left running, parent pid 1). As SystemExit, `finally` runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        # Keep-alive longer than a proxy's idle timeout (nginx and common load balancers: 60 s): otherwise the
        # server may close a connection just as the proxy reuses it, and that request fails.
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", timeout_keep_alive=75)
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()  # SIGTERM: the worker saves its job's state and puts it back in the queue
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()


@app.command("worker", rich_help_panel="Service")
def worker(data_dir: DataDir = None) -> None:
    """Run one more training worker on this database (the data dir's SQLite, or TUNEHOUSE_DATABASE_URL from any
    machine); several can run and never take the same job."""
    from tunehouse.worker.main import serve_worker

    serve_worker(build_settings(data_dir))


@keys_app.command("create")
def keys_create(
    project: Annotated[str, typer.Option(help="Project the key belongs to (objects are per project)")] = "default",
    name: Annotated[str, typer.Option(help="A label for `keys list`")] = "",
    data_dir: DataDir = None,
) -> None:
    """Create an API key; it is printed once (only its hash is stored)."""
    from tunehouse.store.keys import create_key

    try:
        key = create_key(build_settings(data_dir), project, name)
    except ValueError as e:
        err_console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    console.print(f"Created a key for project [bold]{project}[/bold]. Store it now, it is not shown again:")
    print(key)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List keys (id, project, name, visible prefix)."""
    from tunehouse.store.keys import list_keys

    rows = list_keys(build_settings(data_dir))
    if not rows:
        console.print("No API keys: the server runs in single-user mode (loopback only).")
        return
    table = Table("id", "project", "name", "prefix", "source")
    for r in rows:
        table.add_row(r["id"], r["project"], r["name"], r["prefix"] + "...", r["source"])
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id from `tunehouse keys list`")],
                data_dir: DataDir = None) -> None:
    """Revoke a key; requests with it fail from now on."""
    from tunehouse.store.keys import revoke_key

    try:
        entry = revoke_key(build_settings(data_dir), key_id)
    except KeyError as e:
        err_console.print(f"[red]{e.args[0]}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Revoked {entry['id']} (project {entry['project']}).")
