"""`tunehouse ...`: the command line (typer + rich). Commands are plain functions over the library.

One module per area, each registering its commands on the shared app; importing them here wires them up:
data (validate, split), service (serve, worker, keys), base models (models add/list), client (files,
fine_tuning.jobs, models over HTTP), chat/export, eval/quickstart.
"""

from tunehouse.cli.app import app

__all__ = ["app"]
