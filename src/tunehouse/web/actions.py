"""The dashboard's state-changing requests (POST): sign in/out, cancel/pause/resume a job, a playground answer.

Each one checks the CSRF token and Origin (web.auth) first. Job actions call the same store functions as the
/v1 routes; the playground answer is /v1/chat/completions' own route function, streamed as its SSE.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Header, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field, ValidationError

from tunehouse.api import chat
from tunehouse.api.completion_requests import ChatCompletionRequest
from tunehouse.api.deps import SessionDep, SettingsDep
from tunehouse.api.inference_deps import InferenceDep
from tunehouse.store import jobs as jobs_store
from tunehouse.store import keys
from tunehouse.store.errors import StoreError
from tunehouse.web.auth import COOKIE, SESSION_SECONDS, ViewerDep, check_csrf, check_origin, safe_next, sessions_of
from tunehouse.web.render import page

router = APIRouter(include_in_schema=False)
JOB_ACTIONS = {"cancel": jobs_store.cancel_job, "pause": jobs_store.pause_job, "resume": jobs_store.resume_job}


@router.get("/signin")
def signin_page(request: Request, next: str = "/"):
    return page(request, "signin.html", next=safe_next(next), error=None)


@router.post("/signin")
def signin(request: Request, db: SessionDep, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"):
    check_origin(request)  # no login CSRF: another site must not sign our visitor in with its key
    settings = request.app.state.settings
    project = keys.project_for_key(settings, key.strip(), db) if key.strip() else None
    if project is None:
        return page(request, "signin.html", status_code=401, next=safe_next(next),
                    error="That API key is not valid on this server.")
    sid = sessions_of(request).create(db, key.strip())
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(COOKIE, sid, max_age=SESSION_SECONDS, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
    return response


@router.post("/signout")
def signout(request: Request, viewer: ViewerDep, db: SessionDep, csrf_token: Annotated[str, Form()] = ""):
    check_csrf(request, viewer, csrf_token)
    sessions_of(request).drop(db, request.cookies.get(COOKIE))
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.post("/jobs/{job_id}/{action}")
def job_action(request: Request, job_id: str, action: str, viewer: ViewerDep, db: SessionDep,
               csrf_token: Annotated[str, Form()] = ""):
    check_csrf(request, viewer, csrf_token)
    if action not in JOB_ACTIONS:
        return page(request, "error.html", status_code=404, viewer=viewer, title="Not found",
                    message=f"Unknown job action '{action}'.")
    try:
        JOB_ACTIONS[action](db, viewer.project, job_id)
    except StoreError as e:  # e.g. cancelling a finished job: the store's own words
        return page(request, "error.html", status_code=e.status, viewer=viewer, title="Could not " + action,
                    message=e.message, back=f"/jobs/{job_id}")
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


class PlaygroundAsk(BaseModel):
    model: str
    prompt: str = Field(min_length=1)
    system: str = ""
    temperature: float = 0.7
    max_tokens: int = 128


@router.post("/playground/chat")
async def playground_chat(request: Request, ask: PlaygroundAsk, viewer: ViewerDep, db: SessionDep,
                          settings: SettingsDep, svc: InferenceDep,
                          x_csrf_token: Annotated[str | None, Header()] = None):
    """One side of the playground: the chat completion route itself, streamed (SSE), for the viewer's project."""
    check_csrf(request, viewer, x_csrf_token)
    messages = ([{"role": "system", "content": ask.system}] if ask.system.strip() else [])
    messages.append({"role": "user", "content": ask.prompt})
    try:
        body = ChatCompletionRequest(model=ask.model, messages=messages, temperature=ask.temperature,
                                     max_tokens=ask.max_tokens, stream=True)
    except ValidationError as e:  # out-of-range temperature or max tokens: say which, as the API would
        first = e.errors()[0]
        return JSONResponse({"error": {"message": f"{'.'.join(map(str, first['loc']))}: {first['msg']}"}},
                            status_code=400)
    # The viewer's project stands in for the Bearer key's: the same resolution, queue and engine as the API.
    return await chat.create_chat_completion(body, db, settings, viewer.project, svc)
