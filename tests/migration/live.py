"""Two real tunehouse servers for migration tests: a source (standing in for OpenAI) and a target.

The source registers the tiny model under OpenAI's name `gpt-4o-mini-2024-07-18`, so its jobs and `ft:` models
look like OpenAI's. `DownloadGate` is the one test double: while `refuse` is set it answers
GET /v1/files/{id}/content with OpenAI's 400 for fine-tune files, in front of the real app.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from tests.conftest import TINY
from tunehouse.catalog import add_base_model
from tunehouse.cli.local_server import local_server
from tunehouse.config import Settings

OPENAI_BASE = "gpt-4o-mini-2024-07-18"
REFUSAL = "Not allowed to download files of purpose: fine-tune"
_CONTENT = re.compile(r"/v1/files/[^/]+/content")


def make_settings(data_dir: Path, tiny_model_dir: Path, names: tuple[str, ...] = (TINY,), **updates) -> Settings:
    """Settings on `data_dir` with the tiny model registered under `names`; fast polling, no in-job eval."""
    s = Settings(data_dir=data_dir, default_base_model=TINY, worker_poll_seconds=0.2, job_eval_examples=0,
                 **updates)
    for name in names:
        add_base_model(s, name, tiny_model_dir, family="gemma")
    return s


class DownloadGate:
    """ASGI wrapper: while `refuse` is True, file downloads get OpenAI's refusal; everything else passes."""

    def __init__(self, app):
        self.app = app
        self.refuse = False

    async def __call__(self, scope, receive, send):
        if self.refuse and scope["type"] == "http" and scope["method"] == "GET" and _CONTENT.fullmatch(scope["path"]):
            body = json.dumps({"error": {"message": REFUSAL, "type": "invalid_request_error", "param": None,
                                         "code": None}}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


@contextmanager
def gated_server(settings: Settings, worker: bool = True) -> Iterator[tuple[str, DownloadGate]]:
    """local_server over `settings` with a DownloadGate in front of the app."""
    import tunehouse.api.app as api_app

    gates: list[DownloadGate] = []
    original = api_app.create_app

    def create_gated(s):
        gates.append(DownloadGate(original(s)))
        return gates[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api_app, "create_app", create_gated)
        with local_server(settings, worker=worker) as url:
            mp.undo()  # only this server is gated
            yield url, gates[0]


def client(url: str, key: str = "test") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def upload(c: openai.OpenAI, path: Path) -> str:
    with path.open("rb") as f:
        return c.files.wait_for_processing(c.files.create(file=f, purpose="fine-tune").id, poll_interval=0.2).id


def wait(c: openai.OpenAI, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            assert job.status == "succeeded", job.error
            return job.model_dump()
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")
