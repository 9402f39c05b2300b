"""`tunehouse ...`: the command line (typer + rich). Commands are plain functions over the library.

Sections are kept in the order of the workflow: data -> serve/worker -> models -> files/jobs -> chat/eval.
"""

from __future__ import annotations

import typer
from rich.console import Console

from tunehouse.config import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-hosted, OpenAI-compatible fine-tuning.")
console = Console()
err_console = Console(stderr=True)


def build_settings(data_dir: str | None = None) -> Settings:
    return Settings(data_dir=data_dir) if data_dir else Settings()


# --- data: validate, split -------------------------------------------------------------------------------

# --- base models: models add/list --------------------------------------------------------------------------

# --- service: serve, worker, keys --------------------------------------------------------------------------


if __name__ == "__main__":
    app()
