"""create_app(settings): the OpenAI-compatible FastAPI app, every API route under /v1, plus the web dashboard.

Routers are listed once in ROUTERS (one module per noun). Startup migrates the database and finishes the
file checks of jobs a crash left in validating_files. This module never imports tunehouse.training.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from tunehouse.api import chat, completions, files, fine_tuning, models
from tunehouse.api.errors import install_error_handlers
from tunehouse.config import Settings
from tunehouse.store.db import connect
from tunehouse.store.job_validation import validate_job_files
from tunehouse.store.jobs import jobs_to_validate
from tunehouse.store.keys import keys_configured
from tunehouse.web import install as install_dashboard

log = logging.getLogger("tunehouse.api")

ROUTERS = [
    files.router,
    fine_tuning.router,
    models.router,
    chat.router,
    completions.router,
]


def _finish_pending_validations(settings: Settings) -> None:
    conn = connect(settings)
    try:
        for job_id in jobs_to_validate(conn):
            validate_job_files(conn, settings, job_id)
    finally:
        conn.close()


def create_app(settings: Settings) -> FastAPI:
    """The app over `settings` (built by the entry point: `tunehouse serve`, the in-process server, tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        connect(settings).close()  # create / migrate the schema before the first request
        if not keys_configured(settings):
            log.warning("No API keys configured: SINGLE-USER MODE, loopback clients only, any API key accepted."
                        " Create keys with `tunehouse keys create` to serve other machines.")
        await run_in_threadpool(_finish_pending_validations, settings)
        yield

    app = FastAPI(title="tunehouse", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router, prefix="/v1")
    install_dashboard(app)  # the web dashboard, outside /v1 (after the error handlers it builds on)
    return app
