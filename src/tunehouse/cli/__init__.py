"""`tunehouse ...`: the command line (typer + rich). Commands are plain functions over the library.

One module per area, each registering its commands on the shared app; importing them here wires them up:
data (validate, split), service (serve, worker, keys), base models (models add/list), client (files,
fine_tuning.jobs, models over HTTP), chat/export, eval/quickstart.
"""

from tunehouse.cli import client, jobs, models  # noqa: F401  (files, fine_tuning.jobs, models)
from tunehouse.cli import data  # noqa: F401  (validate, split)
from tunehouse.cli import eval  # noqa: F401  (eval, quickstart)
from tunehouse.cli import service  # noqa: F401  (serve, worker, keys)
from tunehouse.cli.app import app

__all__ = ["app"]
