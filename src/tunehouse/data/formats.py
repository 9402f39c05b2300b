"""The three training-file formats and their format rules, as pure checks returning (code, message) problems.

- chat (supervised): {"messages": [...], "tools"?, "parallel_tool_calls"?}
- preference (DPO): {"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}
  (`preferred_completion` / `non_preferred_completion` are accepted as aliases)
- completion (legacy): {"prompt": str, "completion": str}

Error codes follow OpenAI's cookbook ("Data preparation and analysis for chat model fine-tuning") exactly:
data_type, missing_messages_list, message_missing_key, message_unrecognized_key, unrecognized_role,
missing_content, example_missing_assistant_message; plus invalid_weight, invalid_tool_call and, for preference
pairs, multiple_output_messages (an output must be exactly one assistant message). Each check
reports every problem of the example, one entry per offending message, so users can fix a file in one pass.
"""

from __future__ import annotations

import json
from typing import Any

Problem = tuple[str, str]  # (code, message)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_PLAIN_ROLES = frozenset(ROLES)
MESSAGE_KEYS = frozenset({"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"})
PREFERENCE_KEYS = ("input", "preferred_output", "non_preferred_output", "preferred_completion",
                   "non_preferred_completion")


def detect_format(example: Any) -> str | None:
    """"chat" | "preference" | "completion", or None when the example shows no format's key."""
    if not isinstance(example, dict):
        return None
    if "messages" in example:
        return "chat"
    if any(k in example for k in PREFERENCE_KEYS):
        return "preference"
    if "prompt" in example or "completion" in example:
        return "completion"
    return None


def _is_json_string(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def check_tool_calls(calls: Any, where: str) -> list[Problem]:
    """OpenAI shape: [{"id": str, "type": "function", "function": {"name": str, "arguments": JSON string}}]."""
    if not isinstance(calls, list) or not calls:
        return [("invalid_tool_call", f"{where}.tool_calls must be a non-empty list")]
    out: list[Problem] = []
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict):
            out.append(("invalid_tool_call", f"{at} must be an object"))
            continue
        if call.get("type", "function") != "function":
            out.append(("invalid_tool_call", f"{at}.type must be \"function\""))
        if "id" in call and not isinstance(call["id"], str):
            out.append(("invalid_tool_call", f"{at}.id must be a string"))
        fn = call.get("function")
        if not isinstance(fn, dict):
            out.append(("invalid_tool_call", f"{at}.function must be an object with name and arguments"))
            continue
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            out.append(("invalid_tool_call", f"{at}.function.name must be a non-empty string"))
        if not _is_json_string(fn.get("arguments")):
            out.append(("invalid_tool_call", f"{at}.function.arguments must be a string of JSON, e.g. '{{\"x\": 1}}'"))
    return out


def _check_function_call(call: Any, where: str) -> list[Problem]:
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not _is_json_string(
            call.get("arguments")):
        return [("invalid_tool_call", f"{where}.function_call must be {{\"name\": str, \"arguments\": JSON string}}")]
    return []


def _check_content(content: Any, where: str) -> list[Problem]:
    if isinstance(content, str):
        return [] if content else [("missing_content", f"{where} has empty content")]
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                return [("missing_content", f"{where}.content parts must be {{\"type\": \"text\", \"text\": str}} "
                                            "(only text is supported)")]
        if not any(part["text"] for part in content):
            return [("missing_content", f"{where} has empty content")]
        return []
    return [("missing_content", f"{where}.content must be a string, not {type(content).__name__}")]


def check_message(message: Any, where: str) -> list[Problem]:
    """One message's rules (role, keys, content, weight, tool calls)."""
    if not isinstance(message, dict):
        return [("data_type", f"{where} must be an object, not {type(message).__name__}")]
    out: list[Problem] = []
    role = message.get("role")
    calls = "tool_calls" in message or "function_call" in message
    if "role" not in message:
        out.append(("message_missing_key", f"{where} has no 'role'"))
    elif role not in ROLES:
        out.append(("unrecognized_role", f"{where} has role {role!r}; use one of {', '.join(ROLES)}"))
    unknown = sorted(str(k) for k in message if k not in MESSAGE_KEYS)
    if unknown:
        out.append(("message_unrecognized_key", f"{where} has unrecognized key(s) {', '.join(unknown)}"))
    # An assistant message that calls tools may have null or no content, as in OpenAI.
    content = message.get("content")
    if role == "assistant" and calls and content is None:
        pass
    elif "content" not in message:
        out.append(("message_missing_key", f"{where} has no 'content'"))
    else:
        out.extend(_check_content(content, where))
    if "weight" in message:
        w = message["weight"]
        if isinstance(w, bool) or w not in (0, 1):
            out.append(("invalid_weight", f"{where}.weight must be 0 or 1, not {json.dumps(w)}"))
        elif role != "assistant":
            out.append(("invalid_weight", f"{where}: only assistant messages can have a weight"))
    if "tool_calls" in message:
        if role != "assistant":
            out.append(("invalid_tool_call", f"{where}: only assistant messages can have tool_calls"))
        out.extend(check_tool_calls(message["tool_calls"], where))
    if "function_call" in message:
        out.extend(_check_function_call(message["function_call"], where))
    if "tool_call_id" in message and not isinstance(message["tool_call_id"], str):
        out.append(("invalid_tool_call", f"{where}.tool_call_id must be a string"))
    if "name" in message and not isinstance(message["name"], str):
        out.append(("data_type", f"{where}.name must be a string"))
    return out


def check_messages(messages: Any, where: str = "messages", need_assistant: bool = True) -> list[Problem]:
    if not isinstance(messages, list) or not messages:
        return [("missing_messages_list", f"'{where}' must be a non-empty list of messages")]
    out: list[Problem] = []
    for i, m in enumerate(messages):
        # Fast path for the common plain message ({"role", "content": non-empty string}): no allocations.
        if type(m) is dict and len(m) == 2 and type(m.get("content")) is str and m["content"] and (
                m.get("role") in _PLAIN_ROLES):
            continue
        out.extend(check_message(m, f"{where}[{i}]"))
    if need_assistant and not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        out.append(("example_missing_assistant_message", f"'{where}' has no assistant message to learn from"))
    return out


def check_tools(example: dict) -> list[Problem]:
    out: list[Problem] = []
    tools = example.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return [("invalid_tool_call", "'tools' must be a list of tool definitions")]
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if (not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict)
                    or not isinstance(fn.get("name"), str)):
                out.append(("invalid_tool_call", f"tools[{i}] must be {{\"type\": \"function\", \"function\": "
                                                  "{\"name\": str, \"parameters\": {...}}}"))
            elif "parameters" in fn and not isinstance(fn["parameters"], dict):
                out.append(("invalid_tool_call", f"tools[{i}].function.parameters must be a JSON schema object"))
    if "parallel_tool_calls" in example and not isinstance(example["parallel_tool_calls"], bool):
        out.append(("invalid_tool_call", "'parallel_tool_calls' must be true or false"))
    return out


def check_chat(example: dict) -> list[Problem]:
    return check_messages(example.get("messages")) + check_tools(example)


def _output(example: dict, name: str, alias: str) -> tuple[str, Any]:
    return (name, example[name]) if name in example else (alias, example.get(alias))


def _blank_output(m: dict) -> str | None:
    """Why an output message that check_message accepts still has no text to compare, or None.

    check_message already reports missing or empty content; it accepts two cases a DPO output must not have:
    whitespace-only text, and an assistant message with tool calls and null content (OpenAI's DPO trains on
    text outputs only).
    """
    content = m.get("content")
    if content is None:
        calls = "tool_calls" in m or "function_call" in m
        return "has tool calls but no text content" if calls and m.get("role") == "assistant" else None
    if isinstance(content, list):
        if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
            return None  # check_message reported the malformed parts
        content = "".join(p["text"] for p in content)
    if isinstance(content, str) and content and not content.strip():
        return "has only whitespace as content"
    return None


def check_output(value: Any, name: str, key: str) -> list[Problem]:
    """One preference output (`key` as spelled in the file, `name` its canonical name): a list of exactly one
    assistant message with non-blank text. OpenAI trains one assistant message per output."""
    if not isinstance(value, list) or not value:
        return [("example_missing_assistant_message", f"'{name}' must be a non-empty list of assistant messages")]
    out: list[Problem] = []
    if len(value) > 1:
        out.append(("multiple_output_messages", f"'{key}' has {len(value)} messages; a preference output must be "
                                                "exactly one assistant message"))
    for i, m in enumerate(value):
        at = f"{key}[{i}]"
        out.extend(check_message(m, at))
        if not isinstance(m, dict):
            continue
        if "role" in m and m.get("role") != "assistant":
            out.append(("example_missing_assistant_message", f"{at} must be an assistant message"))
        blank = _blank_output(m)
        if blank:
            out.append(("missing_content", f"{at} {blank}: the output must be non-empty text"))
    return out


def check_preference(example: dict) -> list[Problem]:
    inp = example.get("input")
    if not isinstance(inp, dict):
        out = [("missing_messages_list", "'input' must be an object with a 'messages' list")]
    else:
        out = check_messages(inp.get("messages"), "input.messages", need_assistant=False) + check_tools(inp)
    for name, alias in (("preferred_output", "preferred_completion"),
                        ("non_preferred_output", "non_preferred_completion")):
        key, value = _output(example, name, alias)
        out.extend(check_output(value, name, key))
    return out


def check_completion(example: dict) -> list[Problem]:
    out: list[Problem] = []
    for key in ("prompt", "completion"):
        if key not in example:
            out.append(("message_missing_key", f"the example has no '{key}'"))
        elif not isinstance(example[key], str):
            out.append(("missing_content", f"'{key}' must be a string"))
    if isinstance(example.get("completion"), str) and not example["completion"]:
        out.append(("missing_content", "'completion' is empty"))
    return out


def check_example(example: Any, fmt: str) -> list[Problem]:
    """Every format problem of one example read as `fmt`."""
    if not isinstance(example, dict):
        return [("data_type", f"each line must be a JSON object, not {type(example).__name__}")]
    if fmt == "preference":
        return check_preference(example)
    if fmt == "completion":
        return check_completion(example)
    return check_chat(example)
