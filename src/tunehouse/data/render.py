"""Chat rendering: messages -> prompt text, and training examples -> token ids + loss labels.

Pure (no torch, imports nothing of ours). Families:
- "gemma": `<bos><start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>model\\n...<end_of_turn>\\n`. System and
  developer text goes into the first user turn (followed by a blank line), as Gemma's own template does.
- "chatml": `<|im_start|>{role}\\n...<|im_end|>\\n`, system as its own turn.
- a callable `(messages, tools, add_generation_prompt) -> str`: a tokenizer's own chat template.

Tools (one documented format for both built-in families). Tool JSON schemas go into the preamble (the first
user turn for Gemma, the system turn for ChatML) as:

    You can call these tools. To call one, reply with one line per call:
    <tool_call>{"name": "<name>", "arguments": {<arguments>}}</tool_call>
    Available tools:
    {"type": "function", "function": {...}}          (one JSON object per line)

An assistant message's `tool_calls` render after its content (if any, then a newline) as those `<tool_call>`
lines; `parse_tool_calls` turns generated text back into (content, tool_calls). Tool results are a user-side
turn; consecutive tool messages share one turn, each wrapped in `<tool_response>\\n...\\n</tool_response>`.

Masks: only assistant messages with weight != 0 are trained: their content, tool calls and the end-of-turn
marker right after them (so the model learns to stop); not the newline after the marker, nor any other role.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable

IGNORE = -100
Renderer = Callable[[list[dict], list[dict] | None, bool], str]
TOOL_INSTRUCTIONS = (
    "You can call these tools. To call one, reply with one line per call:\n"
    '<tool_call>{"name": "<name>", "arguments": {<arguments>}}</tool_call>\n'
    "Available tools:\n"
)
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_FAMILIES = {
    # family: (text before everything, turn start for a role, end-of-turn marker, assistant role name)
    "gemma": ("<bos>", "<start_of_turn>{role}\n", "<end_of_turn>", "model"),
    "chatml": ("", "<|im_start|>{role}\n", "<|im_end|>", "assistant"),
}


def content_text(content) -> str:
    """OpenAI content is a string, None, or a list of parts; only text parts can be rendered."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("Only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise ValueError(f"Message content must be a string or a list of text parts, not {type(content).__name__}")


def render_tool_calls(tool_calls: list[dict]) -> str:
    lines = []
    for call in tool_calls:
        fn = call.get("function") or {}
        args = fn.get("arguments", "{}")
        try:  # OpenAI sends arguments as a JSON string; render the object itself so the model sees plain JSON.
            args = json.loads(args) if isinstance(args, str) else args
        except json.JSONDecodeError:
            pass
        lines.append("<tool_call>" + json.dumps({"name": fn.get("name"), "arguments": args}, ensure_ascii=False)
                     + "</tool_call>")
    return "\n".join(lines)


def parse_tool_calls(text: str) -> tuple[str | None, list[dict] | None]:
    """Generated text -> (content without the tool calls or None if empty, OpenAI-shaped tool_calls or None)."""
    calls = []
    for raw in _TOOL_CALL.findall(text):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            continue  # not a well-formed call: leave it in the content
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            continue
        args = obj.get("arguments", {})
        calls.append({
            "id": "call_" + uuid.uuid4().hex[:24],
            "type": "function",
            "function": {"name": obj["name"],
                         "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)},
        })
    if not calls:
        return text, None
    content = _TOOL_CALL.sub(lambda m: "" if _is_call(m.group(1)) else m.group(0), text).strip()
    return content or None, calls


def _is_call(raw: str) -> bool:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("name"), str)


def _tools_block(tools: list[dict] | None) -> str:
    if not tools:
        return ""
    return TOOL_INSTRUCTIONS + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)


def assistant_text(message: dict) -> str:
    """An assistant message's text as an assistant turn renders it: content, then its tool calls."""
    text = content_text(message.get("content"))
    calls = message.get("tool_calls")
    if calls:
        text = (text + "\n" if text else "") + render_tool_calls(calls)
    return text


def _render_builtin(messages: list[dict], tools: list[dict] | None, family: str, add_generation_prompt: bool):
    """(text, trained character spans) for a built-in family."""
    if family not in _FAMILIES:
        raise ValueError(f"Unknown chat family '{family}': use one of {', '.join(_FAMILIES)}")
    start, turn, end, assistant = _FAMILIES[family]
    out, spans = [start], []
    length = len(start)

    def emit(role: str, body: str, trained: bool = False) -> None:
        nonlocal length
        head = turn.format(role=role)
        out.append(head + body + end + "\n")
        if trained:
            spans.append((length + len(head), length + len(head) + len(body) + len(end)))
        length += len(head) + len(body) + len(end) + 1

    # Leading system/developer messages (and the tools) form the preamble.
    i, preamble = 0, []
    while i < len(messages) and messages[i].get("role") in ("system", "developer"):
        preamble.append(content_text(messages[i].get("content")))
        i += 1
    if tools:
        preamble.append(_tools_block(tools))
    pending = "\n\n".join(p for p in preamble if p)
    if family == "chatml" and pending:
        emit("system", pending)
        pending = ""
    rest = messages[i:]
    j = 0
    while j < len(rest):
        m = rest[j]
        role = m.get("role")
        if role in ("user", "system", "developer"):
            body = content_text(m.get("content"))
            j += 1
        elif role == "tool":
            blocks = []
            while j < len(rest) and rest[j].get("role") == "tool":
                blocks.append("<tool_response>\n" + content_text(rest[j].get("content")) + "\n</tool_response>")
                j += 1
            body = "\n".join(blocks)
        elif role == "assistant":
            if pending:  # Gemma puts the system text in a user turn; without one, it gets its own
                emit("user", pending)
                pending = ""
            emit(assistant, assistant_text(m), trained=m.get("weight", 1) != 0)
            j += 1
            continue
        else:
            raise ValueError(f"Unknown message role '{role}'")
        if pending:
            body = pending + "\n\n" + body
            pending = ""
        emit("user", body)
    if pending:
        emit("user", pending)
    text = "".join(out)
    if add_generation_prompt:
        text += turn.format(role=assistant)
    return text, spans


def _render_template(messages: list[dict], tools: list[dict] | None, template: Renderer):
    """(text, trained spans) with a tokenizer chat template, rendering prefix by prefix to find assistant turns."""
    full = template(messages, tools, False)
    spans = []
    for k, m in enumerate(messages):
        if m.get("role") != "assistant" or m.get("weight", 1) == 0:
            continue
        before = template(messages[:k], tools, True)
        upto = template(messages[: k + 1], tools, False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise ValueError("The tokenizer's chat template does not render conversations prefix by prefix; "
                             "train it with a built-in family instead")
        # Trailing whitespace after the end-of-turn marker is never generated, so it is not trained.
        spans.append((len(before), len(before) + len(upto[len(before):].rstrip())))
    return full, spans


def render_chat(messages: list[dict], tools: list[dict] | None = None, family: str | Renderer = "gemma",
                add_generation_prompt: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """(text, [(start, end) character spans that are trained])."""
    if callable(family):
        if add_generation_prompt:
            return family(messages, tools, True), []
        return _render_template(messages, tools, family)
    return _render_builtin(messages, tools, family, add_generation_prompt)


def render_prompt(messages: list[dict], tools: list[dict] | None = None, family: str | Renderer = "gemma") -> str:
    """The prompt for generation, ending with the assistant turn opener (`<start_of_turn>model\\n` for Gemma)."""
    return render_chat(messages, tools, family, add_generation_prompt=True)[0]


def end_of_turn(family: str) -> str:
    """The built-in family's end-of-turn marker (a stop string for inference)."""
    return _FAMILIES[family][2]


def encode_example(example: dict, encode: Callable[[str], list[int]], family: str | Renderer = "gemma",
                   max_length: int = 1024) -> tuple[list[int], list[int], bool]:
    """(input_ids, labels, truncated). labels[i] = input_ids[i] where trained, else -100 (no shift applied).

    `encode` must not add special tokens (the rendering has them). Token boundaries of the trained spans come
    from encoding the text up to each boundary, so the ids are exactly those of encoding the whole text.
    Longer examples keep their first `max_length` tokens, as OpenAI does.
    """
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("Example has no 'messages' list")
    text, spans = render_chat(messages, example.get("tools"), family)
    ids = list(encode(text))
    labels = [IGNORE] * len(ids)
    for start, end in spans:
        a, b = len(encode(text[:start])), len(encode(text[:end]))
        labels[a:b] = ids[a:b]
    truncated = len(ids) > max_length
    return ids[:max_length], labels[:max_length], truncated


def preference_chats(example: dict) -> tuple[dict, dict]:
    """A preference example as two chat examples (prompt + preferred, prompt + non-preferred).

    Only the output message is trained: assistant turns inside `input.messages` are context (weight 0).
    The `*_completion` spellings are read too, as the validator accepts them.
    """
    inp = example.get("input")
    if not isinstance(inp, dict) or not isinstance(inp.get("messages"), list):
        raise ValueError("Preference example has no 'input.messages' list")
    prompt = [dict(m, weight=0) if isinstance(m, dict) and m.get("role") == "assistant" else m
              for m in inp["messages"]]
    chats = []
    for name in ("preferred_output", "non_preferred_output"):
        output = example.get(name, example.get(name.replace("output", "completion")))
        if not isinstance(output, list) or len(output) != 1 or not isinstance(output[0], dict):
            raise ValueError(f"'{name}' must be a list of exactly one assistant message")
        chats.append({"messages": prompt + [dict(output[0], weight=1)], "tools": inp.get("tools")})
    return chats[0], chats[1]


def encode_preference(example: dict, encode: Callable[[str], list[int]], family: str | Renderer = "gemma",
                      max_length: int = 1024) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]], bool]:
    """((chosen ids, labels), (rejected ids, labels), truncated): each side rendered and masked as an SFT chat."""
    preferred, rejected = preference_chats(example)
    c_ids, c_labels, c_cut = encode_example(preferred, encode, family, max_length)
    r_ids, r_labels, r_cut = encode_example(rejected, encode, family, max_length)
    return (c_ids, c_labels), (r_ids, r_labels), c_cut or r_cut
