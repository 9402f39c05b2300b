"""Live-server helpers for the API tests: `tunehouse serve` on 127.0.0.1 (random free port) with the tiny model
registered, and official `openai` SDK clients whose every response body is checked against OpenAI's schemas.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import jsonschema
import openai

from tests.conftest import TINY
from tests.tiny import FIXTURES

SCHEMA_DOC = json.loads((FIXTURES / "openai_finetune_subset.json").read_text(encoding="utf-8"))
# Documented deviations, kept explicit and minimal:
# - a paused job reports status "paused": OpenAI's own pause example answers that, though the enum omits it;
# - an empty ListFilesResponse has first_id/last_id null (as ListFineTuningJobCheckpointsResponse declares).
_doc = json.loads(json.dumps(SCHEMA_DOC))
_doc["components"]["schemas"]["FineTuningJob"]["properties"]["status"]["enum"].append("paused")
for _k in ("first_id", "last_id"):
    _doc["components"]["schemas"]["ListFilesResponse"]["properties"][_k] = {"anyOf": [{"type": "string"},
                                                                                       {"type": "null"}]}

# (method, path pattern under /v1) -> schema for a 200 body. Anything unlisted is a test failure.
ROUTES = [
    ("POST", r"/files", "OpenAIFile"),
    ("GET", r"/files", "ListFilesResponse"),
    ("GET", r"/files/[^/]+", "OpenAIFile"),
    ("DELETE", r"/files/[^/]+", "DeleteFileResponse"),
    ("GET", r"/files/[^/]+/content", None),  # raw bytes
    ("POST", r"/fine_tuning/jobs", "FineTuningJob"),
    ("GET", r"/fine_tuning/jobs", "ListPaginatedFineTuningJobsResponse"),
    ("GET", r"/fine_tuning/jobs/[^/]+", "FineTuningJob"),
    ("POST", r"/fine_tuning/jobs/[^/]+/(cancel|pause|resume)", "FineTuningJob"),
    ("GET", r"/fine_tuning/jobs/[^/]+/events", "ListFineTuningJobEventsResponse"),
    ("GET", r"/fine_tuning/jobs/[^/]+/checkpoints", "ListFineTuningJobCheckpointsResponse"),
    ("GET", r"/models", "ListModelsResponse"),
    ("GET", r"/models/.+", "Model"),
    ("DELETE", r"/models/.+", "DeleteModelResponse"),
    ("POST", r"/chat/completions", "CreateChatCompletionResponse"),  # non-streaming (the hook reads JSON)
]


def schema_errors(name: str, body) -> list[str]:
    schema = {"components": _doc["components"], "$ref": f"#/components/schemas/{name}"}
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


def check_response(method: str, path: str, status: int, body: bytes) -> list[str]:
    """Schema problems of one response ([] if fine); error bodies must be OpenAI's ErrorResponse."""
    path = path.split("?")[0].removeprefix("/v1")
    if status >= 400:
        return schema_errors("ErrorResponse", json.loads(body))
    for m, pattern, name in ROUTES:
        if m == method and re.fullmatch(pattern, path):
            return [] if name is None else schema_errors(name, json.loads(body))
    return [f"no schema known for {method} {path}"]


class SchemaLog:
    """Collects schema violations seen by the response hook; tests assert it stays empty."""

    def __init__(self):
        self.problems: list[str] = []
        self.checked = 0

    def hook(self, response: httpx2.Response) -> None:
        response.read()
        self.checked += 1
        problems = check_response(response.request.method, response.request.url.path, response.status_code,
                                  response.content)
        self.problems += [f"{response.request.method} {response.request.url.path}: {p}" for p in problems]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`tunehouse serve` in a subprocess (the real CLI entry point), restartable on the same data dir.

    `database_url` (TUNEHOUSE_DATABASE_URL, also accepted in `env`) puts the store on PostgreSQL; unset, the
    server uses the data dir's SQLite file.
    """

    def __init__(self, data_dir: Path, *, worker: bool = False, env: dict | None = None,
                 database_url: str | None = None):
        self.data_dir, self.worker, self.port = data_dir, worker, free_port()
        # The caller's TUNEHOUSE_* variables must not leak into the server under test.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEHOUSE_")}
        self.env.update({"TUNEHOUSE_DEFAULT_BASE_MODEL": TINY, "TUNEHOUSE_WORKER_POLL_SECONDS": "0.2",
                         "TUNEHOUSE_HEARTBEAT_SECONDS": "0.5", "TUNEHOUSE_STALE_AFTER_SECONDS": "4", **(env or {})})
        if database_url:
            self.env["TUNEHOUSE_DATABASE_URL"] = database_url
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def settings(self):
        """Settings on the server's data dir and database, for a test that reads the store directly."""
        from tunehouse.config import Settings

        return Settings(data_dir=self.data_dir, database_url=self.env.get("TUNEHOUSE_DATABASE_URL"),
                        blob_dir=self.env.get("TUNEHOUSE_BLOB_DIR"))

    def start(self, timeout: float = 60) -> LiveServer:
        cmd = [sys.executable, "-c", "from tunehouse.cli import app; app()", "serve", "--port", str(self.port),
               "--data-dir", str(self.data_dir)] + ([] if self.worker else ["--no-worker"])
        out = open(self.log, "ab")  # noqa: SIM115 - kept open for the process' lifetime
        # own process group, so a test can SIGKILL the server and its worker child together
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx2.get(f"{self.base_url}/models", headers=self.auth_header(), timeout=1).status_code < 500:
                    return self
            except httpx2.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def auth_header(self) -> dict:
        keys = self.env.get("TUNEHOUSE_API_KEYS", "")
        key = keys.split(",")[0].split(":")[-1] if keys else "anything"
        return {"Authorization": f"Bearer {key}"}

    def kill(self) -> None:
        """SIGKILL the server and its worker child at once (whole process group)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc:  # reap a worker child that outlived the server, if any
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def make_data_dir(root: Path, tiny_model_dir: Path) -> Path:
    from tunehouse.catalog import add_base_model
    from tunehouse.config import Settings

    data_dir = root / "data"
    add_base_model(Settings(data_dir=data_dir), TINY, tiny_model_dir, family="gemma")
    return data_dir


def sdk_client(server: LiveServer, log: SchemaLog, api_key: str | None = None) -> openai.OpenAI:
    key = api_key or server.auth_header()["Authorization"].split(" ", 1)[1]
    http = httpx2.Client(event_hooks={"response": [log.hook]}, timeout=60)
    return openai.OpenAI(base_url=server.base_url, api_key=key, http_client=http, max_retries=0)


def chat_file(tmp_path: Path, n: int, name: str = "train.jsonl", source: str = "identity_chat.jsonl") -> Path:
    lines = (FIXTURES / source).read_text(encoding="utf-8").splitlines()
    path = tmp_path / name
    path.write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")
    return path


def wait_for(predicate, timeout: float = 60, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


