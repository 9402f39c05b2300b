"""A stand-in teacher for the distillation tests: a tiny FastAPI app on a loopback port (uvicorn in a thread).

It is not a model: it answers `answer: <last user message>` unless the test queued replies (429 with Retry-After,
500, 400, an empty answer, ...), and it records every request, so the tests can check what was asked, retried
and refused over real HTTP through the official SDK.
"""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

MODEL = "ft:gpt-4o-mini-2024-07-18:acme::teach01"


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # for a 200: the answer text (None = the default answer)
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "test double error"


@dataclass
class TeacherDouble:
    base_url: str = ""
    models: set[str] = field(default_factory=lambda: {MODEL})
    key: str | None = None  # when set, any other bearer key gets a 401
    queued: list[Reply] = field(default_factory=list)  # replies to the next chat requests, in order
    answers: dict[str, Reply] = field(default_factory=dict)  # last user message -> reply (after `queued`)
    chats: list[dict] = field(default_factory=list)  # chat request bodies, in arrival order
    model_checks: list[str] = field(default_factory=list)

    def asked(self) -> list[str]:
        return [body["messages"][-1]["content"] for body in self.chats]


def _error(status: int, message: str, headers: dict | None = None):
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": None}}, status_code=status, headers=headers or {})


def _completion(model: str, text: str) -> dict:
    return {"id": "chatcmpl-double", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


def build_app(double: TeacherDouble):
    app = FastAPI()

    def refused(request: Request):
        if double.key and request.headers.get("authorization") != f"Bearer {double.key}":
            return _error(401, "Incorrect API key provided: sk-wrong.")
        return None

    @app.get("/v1/models/{model:path}")
    def retrieve(model: str, request: Request):
        double.model_checks.append(model)
        if (bad := refused(request)) is not None:
            return bad
        if model not in double.models:
            return _error(404, f"The model '{model}' does not exist or you do not have access to it.")
        return {"id": model, "object": "model", "created": 0, "owned_by": "acme"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        double.chats.append(body)
        if (bad := refused(request)) is not None:
            return bad
        reply = double.queued.pop(0) if double.queued else double.answers.get(body["messages"][-1]["content"])
        reply = reply or Reply()
        if reply.status != 200:
            return _error(reply.status, reply.message, reply.headers)
        text = reply.content if reply.content is not None else f"answer: {body['messages'][-1]['content']}"
        return _completion(body["model"], text)

    return app


@contextmanager
def teacher_double() -> Iterator[TeacherDouble]:
    import uvicorn

    double = TeacherDouble()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(build_app(double), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the teacher double did not start"
        time.sleep(0.01)
    double.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    try:
        yield double
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
