"""The typer app and helpers every command module shares (console, settings)."""

from __future__ import annotations

import typer
from rich.console import Console

from tunehouse.config import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-hosted, OpenAI-compatible fine-tuning.")
console = Console()
err_console = Console(stderr=True)


def build_settings(data_dir: str | None = None) -> Settings:
    return Settings(data_dir=data_dir) if data_dir else Settings()
