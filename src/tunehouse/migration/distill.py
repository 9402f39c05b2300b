"""Teacher distillation: a teacher model's answers to a file of prompts, written as a tunehouse training file.

OpenAI's fine-tuned models stop answering when their base models shut down; until then the old `ft:` model (or
any model on an OpenAI-compatible server) can answer prompts whose answers train a local model.

Prompts come from chat JSONL or plain text lines (tunehouse.migration.prompts).

Resumable: every accepted answer is appended, as one complete line (flushed and fsynced), to the sidecar
`OUT.progress.jsonl` under the prompt's key (its line number plus a hash of what is sent). A rerun asks only the
prompts whose key is not there; a torn last line (a kill mid-write) is cut off and its prompt asked again. The
output file is rebuilt from the sidecar at the end of every run (temp file + rename), in prompt order, each
answered prompt exactly once. Rejected answers (e.g. empty) and failed requests are not recorded, so a rerun
asks them again. Delete the sidecar to start over.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import openai

from tunehouse.data.formats import check_example
from tunehouse.migration.prompts import Prompt, PromptFileError, Skipped, read_prompts

log = logging.getLogger("tunehouse.migration.distill")

T = TypeVar("T")
# The teacher refusing the model or the key: every later request would fail the same way.
FATAL_STATUSES = frozenset({401, 403, 404})
RETRY_AFTER_CAP_S = 120.0  # a server asking for longer is capped: the run stays responsive to Ctrl-C


class DistillError(RuntimeError):
    """Stops the whole run: unreadable prompts, the teacher model missing, a refused key, the teacher gone."""

    def __init__(self, message: str, status: int | None = None, summary: DistillSummary | None = None):
        super().__init__(message)
        self.status = status  # HTTP status from the teacher, when it answered one
        self.summary = summary  # what was done before the stop (answers so far are saved)


@dataclass(frozen=True)
class Teacher:
    """The model that answers, and how to ask it."""

    model: str
    temperature: float = 0.0
    max_tokens: int | None = None
    max_retries: int = 5  # per request, on 429, 5xx and connection errors
    retry_base_s: float = 0.5  # first backoff; doubles per retry (with jitter) unless Retry-After says otherwise
    retry_cap_s: float = 30.0


@dataclass
class DistillSummary:
    total: int  # prompts in the file
    resumed: int  # already answered by an earlier run: not asked again
    out: str
    progress: str  # the sidecar file
    asked: int = 0  # prompts sent to the teacher in this run
    written: int = 0  # chats in the output file (resumed ones included)
    truncated: int = 0  # answers cut by max_tokens (written all the same)
    retries: int = 0
    rejected: list[Skipped] = field(default_factory=list)
    failed: list[Skipped] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every prompt has its answer in the output file."""
        return self.written == self.total

    def to_json(self) -> dict:
        return {"total": self.total, "asked": self.asked, "resumed": self.resumed, "written": self.written,
                "rejected": [s.to_json() for s in self.rejected], "failed": [s.to_json() for s in self.failed],
                "retries": self.retries, "truncated": self.truncated, "complete": self.complete,
                "out": self.out, "progress": self.progress}


# ---- asking the teacher --------------------------------------------------------------------------------------

def describe_error(exc: Exception) -> str:
    """An SDK error as one line: the server's message and HTTP status."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = str(body["message"]) if isinstance(body, dict) and "message" in body else exc.message
        return " ".join(f"{message} (HTTP {exc.status_code})".split())
    return " ".join(str(exc).split()) or type(exc).__name__


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait (`retry-after-ms`, `Retry-After` seconds or HTTP date), or None."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def is_retryable(exc: Exception) -> bool:
    """429, 5xx and transport errors (timeouts included) are worth another try; other 4xx are not."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)


def retry_delay(exc: Exception, attempt: int, teacher: Teacher) -> float:
    """Seconds before retry number `attempt + 1`: the server's Retry-After, else exponential backoff with jitter."""
    response = getattr(exc, "response", None)
    asked = parse_retry_after(getattr(response, "headers", None))
    if asked is not None:
        return min(asked, RETRY_AFTER_CAP_S)
    # Jitter spreads the retries of concurrent requests, so they do not hit a recovering server at once.
    return min(teacher.retry_cap_s, teacher.retry_base_s * 2 ** attempt) * random.uniform(0.5, 1.0)


def call_with_retries(call: Callable[[], T], teacher: Teacher, on_retry: Callable[[], None] | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, retried up to teacher.max_retries times on retryable errors; the last error is raised."""
    for attempt in range(teacher.max_retries + 1):
        try:
            return call()
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            if attempt == teacher.max_retries or not is_retryable(exc):
                raise
            log.info("teacher request failed (%s); retry %d of %d", describe_error(exc), attempt + 1,
                     teacher.max_retries)
            if on_retry is not None:
                on_retry()
            sleep(retry_delay(exc, attempt, teacher))
    raise AssertionError("unreachable")  # the loop returns or raises


def _model_listed(client: openai.OpenAI, model: str) -> bool:
    try:
        return any(m.id == model for m in client.models.list())
    except openai.APIError as exc:
        log.info("listing the teacher's models failed too: %s", describe_error(exc))
        return False


def check_teacher(client: openai.OpenAI, teacher: Teacher) -> None:
    """Fail before asking anything when the model does not exist, the key is refused or the server is away."""
    where = f"{client.base_url}".rstrip("/")
    try:
        call_with_retries(lambda: client.models.retrieve(teacher.model), teacher)
    except openai.NotFoundError as exc:
        # Some OpenAI-compatible servers list models but have no GET /models/{id}.
        if not _model_listed(client, teacher.model):
            raise DistillError(f"teacher model '{teacher.model}' not found on {where}: {describe_error(exc)}",
                               status=404) from None
    except openai.APIStatusError as exc:
        raise DistillError(f"the teacher server at {where} refused to show model '{teacher.model}': "
                           f"{describe_error(exc)}", status=exc.status_code) from None
    except openai.APIConnectionError as exc:
        raise DistillError(f"cannot reach the teacher server at {where}: {describe_error(exc)}") from None


@dataclass
class _Answer:
    """What became of one prompt in this run: an example, or why not."""

    prompt: Prompt
    example: dict | None = None
    rejected: str | None = None
    failed: str | None = None
    fatal: DistillError | None = None
    retries: int = 0
    truncated: bool = False
    skipped: bool = False  # not asked: the run was stopping


def answer_message(message: Any) -> dict:
    """The SDK's ChatCompletionMessage as a training-file assistant message (text, or tool calls)."""
    out: dict = {"role": "assistant", "content": message.content}
    calls = getattr(message, "tool_calls", None)
    if calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.function.name, "arguments": c.function.arguments}}
                             for c in calls]
    return out


def build_example(prompt: Prompt, message: dict) -> tuple[dict | None, str | None]:
    """The training chat for prompt + answer, or (None, why) when it would not be a valid training example."""
    if not message.get("tool_calls") and not (isinstance(message.get("content"), str) and message["content"].strip()):
        return None, "empty answer"
    example: dict = {"messages": [*prompt.messages, message]}
    if prompt.tools is not None:
        example["tools"] = prompt.tools
    if prompt.parallel_tool_calls is not None:
        example["parallel_tool_calls"] = prompt.parallel_tool_calls
    problems = check_example(example, "chat")
    if problems:
        return None, "invalid example: " + "; ".join(f"{code}: {msg}" for code, msg in problems[:3])
    return example, None


def ask_prompt(client: openai.OpenAI, teacher: Teacher, prompt: Prompt, stop: threading.Event | None = None) -> _Answer:
    """One prompt to the teacher (with retries) and its answer checked as a training example.

    A fatal answer sets `stop`, so prompts not yet started are not asked (set here, in the worker thread: with
    one request in flight, the next prompt is never sent).
    """
    out = _Answer(prompt)
    if stop is not None and stop.is_set():
        out.skipped = True
        return out

    def counted() -> None:
        out.retries += 1

    extra: dict = {"tools": prompt.tools} if prompt.tools else {}
    if teacher.max_tokens is not None:
        extra["max_tokens"] = teacher.max_tokens
    try:
        response = call_with_retries(lambda: client.chat.completions.create(
            model=teacher.model, messages=prompt.request_messages(), temperature=teacher.temperature, **extra),
            teacher, counted)
    except openai.APIStatusError as exc:
        if exc.status_code in FATAL_STATUSES:
            out.fatal = DistillError(f"the teacher refused model '{teacher.model}': {describe_error(exc)}",
                                     status=exc.status_code)
        else:
            out.failed = describe_error(exc) + (f" after {out.retries} retries" if out.retries else "")
    except openai.APIConnectionError as exc:
        # Every other request would wait out its retries too: stop, keeping what is saved.
        out.fatal = DistillError(f"lost the teacher server at {str(client.base_url).rstrip('/')} after "
                                 f"{out.retries} retries: {describe_error(exc)}")
    else:
        _take_response(out, response)
    if out.fatal is not None and stop is not None:
        stop.set()
    return out


def _take_response(out: _Answer, response: Any) -> None:
    if not response.choices:
        out.rejected = "the teacher sent no choices"
        return
    choice = response.choices[0]
    out.truncated = choice.finish_reason == "length"
    out.example, out.rejected = build_example(out.prompt, answer_message(choice.message))


# ---- progress sidecar and output -----------------------------------------------------------------------------

def progress_path_for(out_path: str | Path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".progress.jsonl")


def read_progress(path: Path) -> dict[str, dict]:
    """Answers saved by earlier runs, by key. A torn last line is cut off, so later appends stay whole lines."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    good_end = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                log.warning("%s: ignoring a torn last line (the run was killed mid-write)", path)
                break
            good_end += len(raw)
            try:
                entry = json.loads(raw)
                key, example = entry["key"], entry["example"]
            except (ValueError, KeyError, TypeError):
                log.warning("%s: ignoring an unreadable line", path)
                continue
            if isinstance(key, str) and not check_example(example, "chat"):
                done[key] = example
    if good_end != path.stat().st_size:
        os.truncate(path, good_end)
    return done


def append_progress(f, prompt: Prompt, example: dict) -> None:
    """One complete line, on disk before we go on: a kill loses at most the answer being written."""
    line = json.dumps({"key": prompt.key, "line": prompt.line, "example": example}, ensure_ascii=False)
    f.write((line + "\n").encode("utf-8"))
    f.flush()
    os.fsync(f.fileno())


def write_output(out_path: Path, prompts: list[Prompt], done: dict[str, dict]) -> int:
    """The training file: each answered prompt once, in prompt order, replaced atomically. Returns the count."""
    tmp = out_path.with_name(out_path.name + ".tmp")
    written = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for prompt in prompts:
            example = done.get(prompt.key)
            if example is not None:
                f.write(json.dumps(example, ensure_ascii=False) + "\n")
                written += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_path)
    return written


# ---- the run -------------------------------------------------------------------------------------------------

def _ask_pending(client: openai.OpenAI, teacher: Teacher, pending: list[Prompt], done: dict[str, dict],
                 progress: Path, concurrency: int, summary: DistillSummary,
                 on_progress: Callable[[int, int], None] | None) -> None:
    """Ask every pending prompt, `concurrency` at a time; answers are saved as they come (this thread writes)."""
    fatal: DistillError | None = None
    finished = 0
    stop = threading.Event()
    with open(progress, "ab") as f, ThreadPoolExecutor(concurrency, thread_name_prefix="distill") as pool:
        futures = [pool.submit(ask_prompt, client, teacher, p, stop) for p in pending]
        try:
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                answer = future.result()
                if answer.skipped:
                    continue
                finished += 1
                summary.asked += 1
                summary.retries += answer.retries
                if answer.example is not None:
                    append_progress(f, answer.prompt, answer.example)
                    done[answer.prompt.key] = answer.example
                    summary.truncated += answer.truncated
                elif answer.rejected:
                    summary.rejected.append(Skipped(answer.prompt.line, answer.rejected))
                elif answer.failed:
                    summary.failed.append(Skipped(answer.prompt.line, answer.failed))
                if answer.fatal is not None and fatal is None:
                    fatal = answer.fatal
                    for other in futures:  # requests already in flight finish and are saved
                        other.cancel()
                if on_progress is not None:
                    on_progress(finished, len(pending))
        except BaseException:
            stop.set()
            for other in futures:
                other.cancel()
            raise
    if fatal is not None:
        raise fatal


def distill(client: openai.OpenAI, teacher: Teacher, prompts_path: str | Path, out_path: str | Path, *,
            system: str | None = None, concurrency: int = 4,
            on_progress: Callable[[int, int], None] | None = None) -> DistillSummary:
    """Ask the teacher every prompt not answered yet and (re)write `out_path` as a training chat file.

    `on_progress(done, total)` is called from this thread after each answer of this run. The client's own SDK
    retries are turned off: this function retries (see Teacher). Raises DistillError when the run cannot go on
    (its `summary` then says what was done; the answers so far are saved and the output file written).
    """
    prompts_path, out_path = Path(prompts_path), Path(out_path)
    if out_path.exists() and prompts_path.exists() and out_path.resolve() == prompts_path.resolve():
        raise DistillError(f"the output file is the prompts file ({out_path}): write the training chats elsewhere")
    if not out_path.parent.is_dir():
        raise DistillError(f"cannot write {out_path}: no such directory {out_path.parent}")
    try:
        prompts = read_prompts(prompts_path, system)
    except PromptFileError as exc:
        raise DistillError(str(exc)) from None
    progress = progress_path_for(out_path)
    try:
        done = read_progress(progress)
        keys = {p.key for p in prompts}
        done = {k: v for k, v in done.items() if k in keys}  # answers to prompts since edited are not reused
    except OSError as exc:
        raise DistillError(f"cannot read {progress}: {exc.strerror or exc}") from None
    pending = [p for p in prompts if p.key not in done]
    summary = DistillSummary(total=len(prompts), resumed=len(done), out=str(out_path), progress=str(progress))
    client = client.with_options(max_retries=0)
    if pending:
        check_teacher(client, teacher)  # not needed when all is answered (the teacher may be gone by now)
    try:
        if pending:
            if on_progress is not None:
                on_progress(0, len(pending))
            _ask_pending(client, teacher, pending, done, progress, max(1, concurrency), summary, on_progress)
    except OSError as exc:  # the sidecar cannot be opened or written (disk full, permissions)
        raise DistillError(f"cannot write {progress}: {exc.strerror or exc}", summary=summary) from None
    except DistillError as exc:
        exc.summary = summary
        raise
    finally:
        summary.written = _write_output_or_fail(out_path, prompts, done)
    return summary


def _write_output_or_fail(out_path: Path, prompts: list[Prompt], done: dict[str, dict]) -> int:
    try:
        return write_output(out_path, prompts, done)
    except OSError as exc:
        raise DistillError(f"cannot write {out_path}: {exc.strerror or exc} (the answers are kept in "
                           f"{progress_path_for(out_path)})") from None


__all__ = ["DistillError", "DistillSummary", "Prompt", "Skipped", "Teacher", "check_teacher", "distill",
           "read_prompts"]  # read_prompts, Prompt and Skipped come from .prompts
