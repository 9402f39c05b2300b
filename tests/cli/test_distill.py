"""`tunehouse distill`: the command's summary, exit codes and error lines, and resuming after a SIGKILL.

The kill test runs the real command in a subprocess against a real tunehouse server in this process, whose
chat requests pass a gate: the first few are answered, the next one is held, so the kill lands at a known point
(answers 1-3 saved, answer 4 in flight) instead of depending on timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import TINY
from tests.migration.teacher_double import MODEL, Reply, teacher_double

CLI = [sys.executable, "-c", "from tunehouse.cli import app; app()", "distill"]


class ChatGate:
    """ASGI wrapper counting chat requests; after the first `open_for` it holds each one until `release`."""

    def __init__(self, app, open_for: int):
        self.app, self.open_for = app, open_for
        self.chats = 0
        self.released = threading.Event()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
            self.chats += 1
            while self.chats > self.open_for and not self.released.is_set():
                await asyncio.sleep(0.01)
        await self.app(scope, receive, send)


@pytest.fixture
def gated_teacher(settings, monkeypatch):
    """A live tunehouse server on the tiny model whose 4th chat request waits for gate.released."""
    import tunehouse.api.app as api_app
    from tunehouse.cli.local_server import local_server

    settings.engine = "hf"
    made: list[ChatGate] = []
    real = api_app.create_app

    def gated(s):
        made.append(ChatGate(real(s), open_for=3))
        return made[0]

    monkeypatch.setattr(api_app, "create_app", gated)
    with local_server(settings) as url:
        yield url, made[0]
        made[0].released.set()


def wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the command exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_distill_resumes_after_sigkill_asking_only_the_rest(tmp_path, gated_teacher):
    url, gate = gated_teacher
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"}]}) + "\n"
                               for i in range(10)))
    out = tmp_path / "out.jsonl"
    progress = tmp_path / "out.jsonl.progress.jsonl"
    args = [*CLI, "--from-model", TINY, "--from-base-url", url, "--from-api-key", "sk-local", "--prompts",
            str(prompts), "--out", str(out), "--max-tokens", "8", "--json"]
    first = subprocess.Popen([*args, "--concurrency", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        def three_saved_and_fourth_held() -> bool:
            return gate.chats == 4 and progress.exists() and progress.read_bytes().count(b"\n") == 3

        wait_for(three_saved_and_fourth_held, "3 answers were saved", first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    gate.released.set()

    chats_before = gate.chats
    second = subprocess.run([*args, "--concurrency", "2"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert (summary["total"], summary["resumed"], summary["asked"], summary["written"]) == (10, 3, 7, 10)
    assert summary["complete"] is True and summary["rejected"] == [] and summary["failed"] == []
    assert gate.chats - chats_before == 7  # the server saw only the unanswered prompts
    examples = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["messages"][0]["content"] for e in examples] == [f"question {i}" for i in range(10)]
    assert all(e["messages"][-1]["role"] == "assistant" and e["messages"][-1]["content"] for e in examples)
    keys = [json.loads(line)["key"] for line in progress.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 10


@pytest.fixture
def teacher():
    with teacher_double() as double:
        yield double


def test_json_summary_reports_rejected_answers_by_line_and_exits_1(cli, teacher, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("good\n\nempty\nalso good\n")
    teacher.answers = {"empty": Reply(content="")}
    result = cli("distill", "--from-model", MODEL, "--from-base-url", teacher.base_url, "--prompts", str(prompts),
                 "--out", str(tmp_path / "out.jsonl"), "--json")
    assert result.exit_code == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary == {"total": 3, "asked": 3, "resumed": 0, "written": 2,
                       "rejected": [{"line": 3, "why": "empty answer"}], "failed": [], "retries": 0,
                       "truncated": 0, "complete": False, "out": str(tmp_path / "out.jsonl"),
                       "progress": str(tmp_path / "out.jsonl.progress.jsonl")}


def test_human_summary_and_exit_0_when_every_prompt_is_answered(cli, teacher, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n")
    teacher.queued = [Reply(429, headers={"Retry-After": "0"})]
    result = cli("distill", "--from-model", MODEL, "--from-base-url", teacher.base_url, "--prompts", str(prompts),
                 "--out", str(tmp_path / "out.jsonl"), "--system", "be brief")
    assert result.exit_code == 0, result.stderr
    assert "asked 2, already done 0 (resumed), written 2, rejected 0, failed 0, retries 1" in result.stdout
    assert f"Wrote 2 training chats to {tmp_path / 'out.jsonl'}" in result.stdout
    assert all(body["messages"][0] == {"role": "system", "content": "be brief"} for body in teacher.chats)
    assert all(body["temperature"] == 0 and "max_tokens" not in body for body in teacher.chats)


def test_a_refused_key_is_one_line_naming_the_option(cli, teacher, tmp_path, monkeypatch):
    teacher.key = "sk-right"
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    result = cli("distill", "--from-model", MODEL, "--from-base-url", teacher.base_url, "--prompts", str(prompts),
                 "--out", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 1 and teacher.chats == []
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "HTTP 401" in lines[0] and "--from-api-key or set OPENAI_API_KEY" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(("content", "expected"), [
    (None, "no such file"),
    ('{"messages": [{"role": "user", "content": "ok"}]}\n{oops\n', "line 2: invalid JSON"),
])
def test_unusable_prompts_are_one_line_and_nothing_is_asked(cli, teacher, tmp_path, content, expected):
    prompts = tmp_path / "prompts.jsonl"
    if content is not None:
        prompts.write_text(content)
    result = cli("distill", "--from-model", MODEL, "--from-base-url", teacher.base_url, "--prompts", str(prompts),
                 "--out", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 1 and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and teacher.chats == [] and teacher.model_checks == []


def test_a_missing_model_is_one_line(cli, teacher, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\n")
    result = cli("distill", "--from-model", "ft:gone", "--from-base-url", teacher.base_url, "--prompts",
                 str(prompts), "--out", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 1 and teacher.chats == []
    assert result.stderr.strip().splitlines() == [
        f"Error: teacher model 'ft:gone' not found on {teacher.base_url}: The model 'ft:gone' does not exist or "
        "you do not have access to it. (HTTP 404)"]


def test_out_must_not_be_the_prompts_file(cli, teacher, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    result = cli("distill", "--from-model", MODEL, "--from-base-url", teacher.base_url, "--prompts", str(prompts),
                 "--out", str(prompts))
    assert result.exit_code == 1 and "the output file is the prompts file" in result.stderr
    assert Path(prompts).read_text().count("\n") == 1 and os.path.getsize(prompts) > 0
