"""Per-example quality warnings (the data-quality checklist): the example trains, but may train badly.

Each rule is a small pure function over a VALID example's parts returning a message or None, so every rule
is tested on its own. File-level warnings (duplicates, inconsistent system prompts, train/validation overlap,
longer than the context) need state across examples and live in tunehouse.data.validation.
"""

from __future__ import annotations

import re
from typing import Any

MIN_MESSAGE_CHARS = 3  # a user/system message shorter than this ("k", "?") carries almost no signal
MIN_ANSWER_WORDS = 3  # an assistant answer below this many words teaches terseness
_REFUSAL = re.compile(
    r"\b(i cannot|i can't|i can not|i'm unable to|i am unable to|i'm sorry, but|i am sorry, but|"
    r"as an ai\b|as a language model|as an ai language model|i'm not able to|i am not able to)",
    re.IGNORECASE,
)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def parts(example: dict, fmt: str) -> tuple[list[dict] | None, list[dict]]:
    """(conversation messages or None for prompt/completion, the answers that are learned)."""
    if fmt == "completion":
        return None, [{"role": "assistant", "content": example.get("completion", "")}]
    if fmt == "preference":
        preferred = example.get("preferred_output") or example.get("preferred_completion") or []
        return example["input"]["messages"], preferred
    messages = example["messages"]
    return messages, [m for m in messages if m.get("role") == "assistant"]


def no_system_message(messages: list[dict]) -> str | None:
    if not any(m.get("role") in ("system", "developer") for m in messages):
        return "no system message: a consistent system prompt tells the model which behaviour to use"
    return None


def no_user_message(messages: list[dict]) -> str | None:
    if not any(m.get("role") == "user" for m in messages):
        return "no user message: the model learns to answer without being asked"
    return None


def short_message(messages: list[dict]) -> str | None:
    for i, m in enumerate(messages):
        if m.get("role") in ("system", "developer", "user") and isinstance(m.get("content"), str | list):
            text = _text(m["content"]).strip()
            if len(text) < MIN_MESSAGE_CHARS:
                return f"messages[{i}] ({m['role']}) is very short: {text!r}"
    return None


def brief_assistant_answer(answers: list[dict]) -> str | None:
    for m in answers:
        if m.get("tool_calls") or m.get("function_call") or m.get("weight", 1) == 0:
            continue
        text = _text(m.get("content")).strip()
        if len(text.split()) < MIN_ANSWER_WORDS:
            return f"assistant answer is very brief ({len(text.split())} word(s)): {text[:40]!r}"
    return None


def refusal(answers: list[dict]) -> str | None:
    for m in answers:
        match = _REFUSAL.search(_text(m.get("content")))
        if match and m.get("weight", 1) != 0:
            return f"assistant answer looks like a refusal ({match.group(0)!r}): the model will learn to refuse"
    return None


def last_message_not_assistant(messages: list[dict]) -> str | None:
    role = messages[-1].get("role")
    if role != "assistant":
        return f"the last message is from {role!r}, not the assistant: it is not trained on"
    return None


def no_trained_tokens(answers: list[dict]) -> str | None:
    if answers and all(m.get("weight", 1) == 0 for m in answers):
        return "every assistant message has weight 0: nothing in this example is trained"
    return None


def quality_warnings(example: dict, fmt: str) -> list[tuple[str, str]]:
    """Every per-example warning of a valid example as (code, message)."""
    messages, answers = parts(example, fmt)
    checks: list[tuple[str, str | None]] = []
    if messages is not None:
        checks += [("no_system_message", no_system_message(messages)), ("no_user_message", no_user_message(messages)),
                   ("short_message", short_message(messages))]
        if fmt == "chat":
            checks.append(("last_message_not_assistant", last_message_not_assistant(messages)))
    checks += [("brief_assistant_answer", brief_assistant_answer(answers)), ("refusal", refusal(answers)),
               ("no_trained_tokens", no_trained_tokens(answers))]
    return [(code, msg) for code, msg in checks if msg]


def system_prompt(example: dict, fmt: str) -> str | None:
    """The example's system (or developer) text, for the consistency check across the file."""
    messages, _ = parts(example, fmt)
    for m in messages or ():
        if m.get("role") in ("system", "developer"):
            return _text(m.get("content"))
    return None
