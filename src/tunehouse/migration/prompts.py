"""Prompt files for distillation: chat JSONL or plain text lines, read into prompts with a stable key each.

Chat JSONL: the prompt is every message before the example's last assistant message, or all of them when there
is none; `tools` and `parallel_tool_calls` are kept. Plain text: each non-blank line is one user message. A file
is chat JSONL when its name ends in `.jsonl` or its first non-blank line is a JSON object.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunehouse.data.formats import check_messages
from tunehouse.data.jsonl import JsonlFileError, iter_raw_lines, read_jsonl

# Sent to the teacher: our training-only keys (weight) are not part of a chat request.
_REQUEST_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "function_call")
_MAX_LISTED_PROBLEMS = 3


class PromptFileError(ValueError):
    """The prompts file cannot be read, or some of its lines are not prompts (nothing is asked then)."""


@dataclass(frozen=True)
class Prompt:
    line: int  # 1-based line in the prompts file
    messages: list[dict]  # as written to the training file
    tools: list | None = None
    parallel_tool_calls: bool | None = None
    key: str = ""

    def request_messages(self) -> list[dict]:
        return [{k: m[k] for k in _REQUEST_KEYS if k in m} for m in self.messages]


@dataclass(frozen=True)
class Skipped:
    line: int
    why: str

    def to_json(self) -> dict:
        return {"line": self.line, "why": self.why}


def prompt_key(line: int, messages: list[dict], tools: list | None = None) -> str:
    """Stable per prompt: its line and a hash of what it asks (an edited line or --system is asked again)."""
    blob = json.dumps({"messages": messages, "tools": tools}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return f"{line}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _make_prompt(line: int, messages: list[dict], system: str | None, tools=None, parallel=None) -> Prompt:
    if system and not any(m.get("role") in ("system", "developer") for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    return Prompt(line, messages, tools, parallel, prompt_key(line, messages, tools))


def _is_chat_file(path: Path) -> bool:
    if path.suffix.lower() == ".jsonl":
        return True
    for _, raw, _ in iter_raw_lines(path):
        if raw is not None and raw.strip():
            try:
                return isinstance(json.loads(raw), dict)
            except ValueError:
                return False
    return False


def _chat_prompt(value: Any, line: int, system: str | None) -> tuple[Prompt | None, str | None]:
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
        return None, 'each line must be an object with a "messages" list'
    messages = value["messages"]
    last = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
               default=len(messages))
    prompt = messages[:last]
    if not prompt:
        return None, "nothing to ask: the first message is the assistant's"
    problems = check_messages(prompt, need_assistant=False)
    if problems:
        return None, problems[0][1]
    return _make_prompt(line, prompt, system, value.get("tools"), value.get("parallel_tool_calls")), None


def _read_chat_prompts(path: Path, system: str | None) -> tuple[list[Prompt], list[Skipped]]:
    prompts, bad = [], []
    for item in read_jsonl(path):
        if item.error:
            bad.append(Skipped(item.line, item.message))
            if item.fatal:
                break
            continue
        prompt, why = _chat_prompt(item.value, item.line, system)
        if prompt is None:
            bad.append(Skipped(item.line, why or "not a prompt"))
        else:
            prompts.append(prompt)
    return prompts, bad


def _read_line_prompts(path: Path, system: str | None) -> tuple[list[Prompt], list[Skipped]]:
    prompts, bad = [], []
    for line, raw, _ in iter_raw_lines(path):
        if raw is None:
            bad.append(Skipped(line, "line too long"))
            continue
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            bad.append(Skipped(line, "not valid UTF-8; save the file as UTF-8"))
            continue
        if text:
            prompts.append(_make_prompt(line, [{"role": "user", "content": text}], system))
    return prompts, bad


def read_prompts(path: str | Path, system: str | None = None) -> list[Prompt]:
    """Every prompt of the file, in order; `system` is prepended to prompts without a system message.

    Raises PromptFileError naming the bad lines when any line is not a usable prompt: nothing is asked then.
    """
    path = Path(path)
    try:
        chat = _is_chat_file(path)
        prompts, bad = (_read_chat_prompts if chat else _read_line_prompts)(path, system)
    except JsonlFileError as e:
        raise PromptFileError(f"cannot read the prompts: {e}") from None
    if bad:
        listed = "; ".join(f"line {b.line}: {b.why}" for b in bad[:_MAX_LISTED_PROBLEMS])
        more = f" (and {len(bad) - _MAX_LISTED_PROBLEMS} more)" if len(bad) > _MAX_LISTED_PROBLEMS else ""
        raise PromptFileError(f"{path}: {len(bad)} bad prompt line(s): {listed}{more}")
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file")
    return prompts
