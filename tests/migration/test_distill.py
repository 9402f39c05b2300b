"""Teacher distillation (tunehouse.migration.distill): prompts in, validated training chats out, resumable.

The teacher is a real tunehouse server on the tiny model where the answers matter, and a small HTTP double
(tests/migration/teacher_double.py) where the test needs 429s, 500s, refusals or empty answers on cue.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import openai
import pytest

from tests.conftest import TINY
from tests.migration.teacher_double import MODEL, Reply, teacher_double
from tunehouse.cli.local_server import local_server
from tunehouse.data.validation import UPLOAD_TOLERATED, validate_file
from tunehouse.migration.distill import (
    DistillError,
    Teacher,
    distill,
    parse_retry_after,
    progress_path_for,
    read_progress,
    retry_delay,
)
from tunehouse.migration.prompts import read_prompts

FAST = dict(retry_base_s=0.01, retry_cap_s=0.05)  # backoff without waiting seconds


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows))
    return path


def read_out(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def client_for(url: str, key: str = "sk-test") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def assert_trainable(path: Path) -> None:
    report = validate_file(path)
    assert report.blocking_errors(ignore=UPLOAD_TOLERATED) == [], report.to_json()["errors"]


# ---- retries -------------------------------------------------------------------------------------------------

def test_retry_after_is_read_from_seconds_milliseconds_and_http_dates():
    now = 1_700_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 7, tz=UTC), usegmt=True)
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(7.0)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_doubles_with_jitter_and_retry_after_wins():
    import httpx

    teacher = Teacher("m", retry_base_s=1.0, retry_cap_s=8.0)
    bare = openai.InternalServerError("boom", response=httpx.Response(500, request=httpx.Request("POST", "http://x")),
                                      body=None)
    delays = [[retry_delay(bare, attempt, teacher) for _ in range(50)] for attempt in range(5)]
    for attempt, seen in enumerate(delays):
        top = min(8.0, 2.0 ** attempt)
        assert all(top / 2 <= d <= top for d in seen), (attempt, seen)
        assert len(set(seen)) > 1  # jittered
    asked = openai.RateLimitError("slow down", body=None, response=httpx.Response(
        429, headers={"retry-after": "2"}, request=httpx.Request("POST", "http://x")))
    assert retry_delay(asked, 4, teacher) == 2.0


def test_429_and_500_are_retried_until_a_valid_answer_comes(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("first\nsecond\n")
    with teacher_double() as teacher:
        teacher.queued = [Reply(429, headers={"Retry-After": "0"}), Reply(500), Reply(503),
                          Reply(429, headers={"Retry-After": "0"})]
        summary = distill(client_for(teacher.base_url), Teacher(MODEL, **FAST), prompts, tmp_path / "out.jsonl",
                          concurrency=1)
    assert summary.complete and summary.written == 2 and summary.retries == 4 and summary.failed == []
    assert teacher.asked() == ["first"] * 5 + ["second"]
    assert [e["messages"][-1]["content"] for e in read_out(tmp_path / "out.jsonl")] == ["answer: first",
                                                                                      "answer: second"]


def test_a_prompt_that_keeps_failing_is_reported_after_max_retries_and_the_rest_is_written(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("flaky\nfine\ntoo long\n")
    with teacher_double() as teacher:
        teacher.answers = {"flaky": Reply(500, message="overloaded"),
                           "too long": Reply(400, message="maximum context length exceeded")}
        summary = distill(client_for(teacher.base_url), Teacher(MODEL, max_retries=2, **FAST), prompts,
                          tmp_path / "out.jsonl", concurrency=2)
    assert not summary.complete and summary.written == 1
    assert {(f.line, f.why) for f in summary.failed} == {
        (1, "overloaded (HTTP 500) after 2 retries"), (3, "maximum context length exceeded (HTTP 400)")}
    assert teacher.asked().count("flaky") == 3 and teacher.asked().count("too long") == 1  # a 400 is not retried
    assert [e["messages"][0]["content"] for e in read_out(tmp_path / "out.jsonl")] == ["fine"]


# ---- refusals and rejected answers ---------------------------------------------------------------------------

def test_a_refused_key_stops_before_any_prompt_is_asked(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    with teacher_double() as teacher:
        teacher.key = "sk-right"
        with pytest.raises(DistillError) as err:
            distill(client_for(teacher.base_url, "sk-wrong"), Teacher(MODEL), prompts, tmp_path / "out.jsonl")
    assert err.value.status == 401 and "Incorrect API key" in str(err.value) and "HTTP 401" in str(err.value)
    assert teacher.chats == [] and len(teacher.model_checks) == 1  # a 401 is not retried
    assert not (tmp_path / "out.jsonl").exists()


def test_a_model_that_disappears_mid_run_stops_the_run_and_keeps_the_answers_so_far(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\nc\nd\n")
    with teacher_double() as teacher:
        teacher.answers = {"b": Reply(404, message="The model has been shut down")}
        with pytest.raises(DistillError) as err:
            distill(client_for(teacher.base_url), Teacher(MODEL), prompts, tmp_path / "out.jsonl", concurrency=1)
    assert err.value.status == 404 and "shut down" in str(err.value)
    assert teacher.asked() == ["a", "b"]  # c and d were never asked
    assert err.value.summary.written == 1
    assert [e["messages"][0]["content"] for e in read_out(tmp_path / "out.jsonl")] == ["a"]


def test_an_empty_answer_is_rejected_not_written_and_asked_again_on_the_next_run(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n\nc\n")
    out = tmp_path / "out.jsonl"
    with teacher_double() as teacher:
        teacher.answers = {"b": Reply(content=""), "c": Reply(content="  \n")}
        summary = distill(client_for(teacher.base_url), Teacher(MODEL), prompts, out)
        assert [(r.line, r.why) for r in sorted(summary.rejected, key=lambda r: r.line)] == [
            (2, "empty answer"), (4, "empty answer")]
        assert summary.written == 1 and not summary.complete
        assert [e["messages"][0]["content"] for e in read_out(out)] == ["a"]
        teacher.answers = {}
        again = distill(client_for(teacher.base_url), Teacher(MODEL), prompts, out)
    assert (again.resumed, again.asked, again.written, again.rejected) == (1, 2, 3, [])
    assert sorted(teacher.asked()[:3]) == ["a", "b", "c"] and sorted(teacher.asked()[3:]) == ["b", "c"]
    assert [e["messages"][0]["content"] for e in read_out(out)] == ["a", "b", "c"]


def test_an_unreachable_teacher_is_one_clear_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\n")
    with pytest.raises(DistillError, match=f"cannot reach the teacher server at http://127.0.0.1:{port}/v1"):
        distill(client_for(f"http://127.0.0.1:{port}/v1"), Teacher(MODEL, max_retries=1, **FAST), prompts,
                tmp_path / "out.jsonl")


# ---- a real tunehouse teacher --------------------------------------------------------------------------------

@pytest.fixture
def tiny_teacher(settings):
    settings.engine = "hf"
    with local_server(settings) as url:
        yield url


def test_chat_and_plain_prompts_become_valid_training_chats(tmp_path, tiny_teacher):
    chats = write_lines(tmp_path / "chats.jsonl", [
        {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "stale"}]}
        for i in range(6)] + [{"messages": [{"role": "system", "content": "terse"},
                                            {"role": "user", "content": "no reference"}]}])
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"plain prompt {i}\n" for i in range(5)))
    teacher = Teacher(TINY, max_tokens=8)
    for prompts, out, system in ((chats, tmp_path / "a.jsonl", None), (lines, tmp_path / "b.jsonl", "be kind")):
        summary = distill(client_for(tiny_teacher), teacher, prompts, out, system=system, concurrency=3)
        assert summary.complete and summary.asked == summary.total == summary.written
        assert_trainable(out)
        examples = read_out(out)
        expected = [p.messages for p in read_prompts(prompts, system)]
        assert [e["messages"][:-1] for e in examples] == expected  # in prompt order, prompt kept as sent
        for e in examples:
            assert e["messages"][-1]["role"] == "assistant" and e["messages"][-1]["content"].strip()
            assert e["messages"][-1]["content"] != "stale"  # the teacher's answer, not the file's
    assert read_out(tmp_path / "b.jsonl")[0]["messages"][0] == {"role": "system", "content": "be kind"}


def test_a_rerun_asks_nothing_and_a_torn_last_line_is_asked_again(tmp_path, tiny_teacher):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(5)))
    out = tmp_path / "out.jsonl"
    teacher = Teacher(TINY, max_tokens=8)
    first = distill(client_for(tiny_teacher), teacher, prompts, out)
    assert first.complete and first.asked == 5
    before = out.read_bytes()
    again = distill(client_for(tiny_teacher), teacher, prompts, out)
    assert (again.asked, again.resumed, again.written) == (0, 5, 5) and out.read_bytes() == before

    # A kill mid-write: the last saved line lost its end; a later prompt was never saved.
    progress = progress_path_for(out)
    saved = progress.read_bytes().splitlines(keepends=True)
    progress.write_bytes(b"".join(saved[:2]) + saved[2][: len(saved[2]) // 2])
    assert len(read_progress(progress)) == 2 and progress.read_bytes() == b"".join(saved[:2])
    progress.write_bytes(b"".join(saved[:2]) + saved[2][: len(saved[2]) // 2])
    resumed = distill(client_for(tiny_teacher), teacher, prompts, out)
    assert (resumed.resumed, resumed.asked, resumed.written) == (2, 3, 5)
    assert out.read_bytes() == before  # greedy answers: the same file as an uninterrupted run
    keys = [json.loads(line)["key"] for line in progress.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 5


def test_a_missing_teacher_model_stops_at_once_without_asking(tmp_path, tiny_teacher):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\n")
    with pytest.raises(DistillError) as err:
        distill(client_for(tiny_teacher), Teacher("ft:gpt-4o-mini:acme::gone"), prompts, tmp_path / "out.jsonl")
    assert err.value.status == 404 and "teacher model 'ft:gpt-4o-mini:acme::gone' not found" in str(err.value)
    assert not (tmp_path / "out.jsonl").exists() and not progress_path_for(tmp_path / "out.jsonl").exists()
