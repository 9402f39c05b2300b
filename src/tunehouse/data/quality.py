"""Per-example quality warnings (the data-quality checklist): the example trains, but may train badly.

`scan_example` walks a VALID example once (this is the validator's hot path) and returns its warnings plus
its system prompt. Rules, each with its own code:
- no_system_message / no_user_message: the conversation has none;
- short_message: a user/system message under MIN_MESSAGE_CHARS characters ("k", "?");
- brief_assistant_answer: a trained assistant answer under MIN_ANSWER_WORDS words (tool calls excepted; each
  Chinese/Japanese character counts as a word, as those scripts do not put spaces between words);
- refusal: a trained answer containing a refusal phrase ("I cannot", "As an AI", ...);
- last_message_not_assistant: the chat ends with another role, which is never trained on;
- no_trained_tokens: every assistant message has weight 0;
- identical_outputs (preference pairs): the preferred and non-preferred outputs say the same thing.
File-level warnings (duplicates, inconsistent system prompts, train/validation overlap, longer than the
context) need state across examples and live in tunehouse.data.validation.
"""

from __future__ import annotations

from typing import Any

MIN_MESSAGE_CHARS = 3
MIN_ANSWER_WORDS = 3
# Lower-case phrases found by plain substring search (a regex with alternations was 20% of validation time).
REFUSAL_PHRASES = ("i cannot", "i can't", "i can\u2019t", "i can not", "i'm unable to", "i am unable to",
                   "i'm sorry, but", "i am sorry, but", "as an ai ", "as an ai,", "as an ai.", "as a language model",
                   "i'm not able to", "i am not able to")


def _text(content: Any) -> str:
    if type(content) is str:
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _is_cjk(ch: str) -> bool:
    """Han ideographs, kana and CJK compatibility ideographs: scripts written without spaces between words."""
    o = ord(ch)
    return 0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF


def count_words(text: str) -> int:
    if text.isascii():  # the common case stays a plain split (validation speed is a benchmark target)
        return len(text.split())
    cjk = sum(map(_is_cjk, text))
    if not cjk:
        return len(text.split())
    return cjk + len("".join(" " if _is_cjk(ch) else ch for ch in text).split())


def _answer_warnings(answers: list[dict], out: list[tuple[str, str]]) -> None:
    brief = refused = None
    trained = False
    for m in answers:
        if m.get("weight", 1) == 0:
            continue
        trained = True
        text = _text(m.get("content"))
        if brief is None and not (m.get("tool_calls") or m.get("function_call")):
            words = count_words(text)
            if words < MIN_ANSWER_WORDS:
                brief = f"assistant answer is very brief ({words} word(s)): {text.strip()[:40]!r}"
        if refused is None:
            low = text.lower()
            for phrase in REFUSAL_PHRASES:
                if phrase in low:
                    refused = f"assistant answer looks like a refusal ({phrase.strip(' ,.')!r}): " \
                              "the model will learn to refuse"
                    break
    if brief:
        out.append(("brief_assistant_answer", brief))
    if refused:
        out.append(("refusal", refused))
    if answers and not trained:
        out.append(("no_trained_tokens", "every assistant message has weight 0: nothing in this example is trained"))


def _output_message(example: dict, name: str) -> dict:
    """The one message of a valid pair's output `name` (or its `*_completion` alias)."""
    output = example.get(name) or example.get(name.replace("output", "completion"))
    return output[0]


def check_identical_outputs(example: dict) -> list[tuple[str, str]]:
    """A VALID pair whose two outputs are the same text (after stripping) and the same tool calls teaches
    nothing: both log-probability ratios are equal, so DPO's gradient for it is zero. A warning, not an error:
    one such pair only wastes compute, it should not fail a whole job."""
    chosen, rejected = _output_message(example, "preferred_output"), _output_message(example, "non_preferred_output")
    if _text(chosen.get("content")).strip() != _text(rejected.get("content")).strip():
        return []
    for key in ("tool_calls", "function_call"):
        if chosen.get(key) != rejected.get(key):
            return []
    return [("identical_outputs", "preferred_output and non_preferred_output have the same text: the pair "
                                  "teaches nothing (DPO's gradient is zero for it)")]


def scan_example(example: dict, fmt: str) -> tuple[list[tuple[str, str]], str | None]:
    """(every per-example warning as (code, message), the system/developer prompt or None) of a valid example."""
    out: list[tuple[str, str]] = []
    if fmt == "completion":
        _answer_warnings([{"role": "assistant", "content": example.get("completion", "")}], out)
        return out, None
    if fmt == "preference":
        messages = example["input"]["messages"]
        answers = example.get("preferred_output") or example.get("preferred_completion") or []
        out.extend(check_identical_outputs(example))
    else:
        messages, answers = example["messages"], []
    system = short = None
    has_user = False
    for i, m in enumerate(messages):
        role = m.get("role")
        if role == "assistant":
            if fmt == "chat":
                answers.append(m)
            continue
        if role == "user":
            has_user = True
        elif role in ("system", "developer"):
            if system is None:
                system = _text(m.get("content"))
        else:
            continue
        if short is None:
            text = _text(m.get("content")).strip()
            if len(text) < MIN_MESSAGE_CHARS:
                short = f"messages[{i}] ({role}) is very short: {text!r}"
    if system is None:
        out.append(("no_system_message", "no system message: a consistent system prompt tells the model which "
                                         "behaviour to use"))
    if not has_user:
        out.append(("no_user_message", "no user message: the model learns to answer without being asked"))
    if short:
        out.append(("short_message", short))
    if fmt == "chat" and messages[-1].get("role") != "assistant":
        out.append(("last_message_not_assistant",
                    f"the last message is from {messages[-1].get('role')!r}, not the assistant: it is not trained on"))
    _answer_warnings(answers, out)
    return out, system
