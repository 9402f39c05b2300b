"""What the generation routes need from the inference service: the app's one service, a loaded engine, a slot.

`InferenceDep` is the app's InferenceService (created on first use; engines load lazily, per base model).
`load_engine` and `admit` turn the service's failures into OpenAI's errors: 503 engine_unavailable and
429 rate_limit_exceeded (with Retry-After). `sse_response` streams a generation and closes it as soon as the
client goes away, which frees its decoding slot (and its admission ticket) at once.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tunehouse.api.errors import APIError
from tunehouse.inference.service import EngineUnavailable, InferenceService, QueueFull, Ticket

_init = threading.Lock()


def get_inference_service(request: Request) -> InferenceService:
    state = request.app.state
    with _init:
        if getattr(state, "inference", None) is None:
            state.inference = InferenceService(state.settings)
    return state.inference


InferenceDep = Annotated[InferenceService, Depends(get_inference_service)]


async def load_engine(svc: InferenceService, base: str, adapter_dir: Path | None):
    """The engine serving (base, adapter), loaded off the event loop (a first load takes seconds)."""
    try:
        return await run_in_threadpool(svc.engine, base, adapter_dir)
    except EngineUnavailable as e:
        raise APIError(503, str(e), code="engine_unavailable", type="server_error") from None


def admit(svc: InferenceService) -> Ticket:
    try:
        return svc.admit()
    except QueueFull as e:
        raise APIError(429, str(e), code="rate_limit_exceeded", type="requests",
                       headers={"Retry-After": "1"}) from None


async def _in_threads(chunks: Iterator[str]) -> AsyncIterator[str]:
    """Each chunk computed in the thread pool (decoding blocks); on a disconnect Starlette cancels the stream
    and the finally closes the generation right away instead of whenever garbage collection gets to it."""
    done = object()
    try:
        while (chunk := await run_in_threadpool(next, chunks, done)) is not done:
            yield chunk
    finally:
        chunks.close()  # runs the generation's finally blocks: slot and ticket released


def sse_response(chunks: Iterator[str]) -> StreamingResponse:
    return StreamingResponse(_in_threads(chunks), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
