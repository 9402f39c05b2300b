"""`tunehouse ...`: the command line (typer + rich). Commands are plain functions over the library.

One module per area, each registering its commands on the shared app; importing them here wires them up:
data (validate, split), service (serve, worker, keys), models (catalog and HTTP), files, jobs
(fine_tuning.jobs over HTTP), chat/export, eval/quickstart, migrate, distill; `connection` holds what the client
commands share.
"""

# One block (ruff's isort merges imports from one package): add a module on its own line, keep them sorted.
from tunehouse.cli import (  # noqa: F401  (importing a module registers its commands)
    chat,  # chat, export
    data,  # validate, split
    distill,  # distill (a teacher model's answers as training data)
    eval,  # eval, quickstart
    files,  # files create/list/retrieve/delete/content
    jobs,  # fine_tuning.jobs.*, fine-tuning jobs ...
    migrate,  # migrate (OpenAI jobs -> local)
    models,  # models list/retrieve/delete/add/remove
    service,  # serve, worker, keys
)
from tunehouse.cli.app import app

__all__ = ["app"]
