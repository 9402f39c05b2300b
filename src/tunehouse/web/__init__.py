"""The web dashboard, served by the API's app outside /v1: jobs, live loss curves, files, models, playground.

`install(app)` (called by api/app.py, the only importer) adds the pages, the actions, the static assets and the
handlers that turn "sign in first" and "forbidden" into pages. Everything it shows comes from the store and the
API's own objects; it never imports tunehouse.training.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from tunehouse.store.errors import InvalidRequest, NotFound, StoreError
from tunehouse.web import actions, pages
from tunehouse.web.auth import Forbidden, Sessions, SignInRequired
from tunehouse.web.render import STATIC_DIR, page

API_PREFIX = "/v1"


def install(app: FastAPI) -> None:
    app.state.web_sessions = Sessions()
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(pages.router)
    app.include_router(actions.router)
    api_store_error = app.exception_handlers[StoreError]  # the API's OpenAI-shaped JSON, kept for /v1

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, exc: SignInRequired):
        return RedirectResponse(f"/signin?next={request.url.path}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden):
        return page(request, "error.html", status_code=403, title="Forbidden", message=exc.message)

    async def store_error_page(request: Request, exc: NotFound | InvalidRequest):
        if request.url.path.startswith(API_PREFIX + "/"):
            return await api_store_error(request, exc)
        title = "Not found" if isinstance(exc, NotFound) else "Bad request"
        return page(request, "error.html", status_code=exc.status, title=title, message=exc.message)

    app.add_exception_handler(NotFound, store_error_page)
    app.add_exception_handler(InvalidRequest, store_error_page)
