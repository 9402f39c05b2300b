"""Prompt files for distillation (tunehouse.migration.prompts): chat JSONL and plain lines, keys, bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunehouse.migration.prompts import PromptFileError, prompt_key, read_prompts


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows))
    return path


def test_chat_prompts_are_the_messages_before_the_last_assistant_message(tmp_path):
    sys_msg = {"role": "system", "content": "be brief"}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    path = write_lines(tmp_path / "p.jsonl", [
        {"messages": [sys_msg, {"role": "user", "content": "a"}, {"role": "assistant", "content": "old"},
                      {"role": "user", "content": "b"}, {"role": "assistant", "content": "old2", "weight": 1}]},
        "",
        {"messages": [{"role": "user", "content": "no answer yet"}], "tools": tools},
    ])
    first, second = read_prompts(path)
    assert first.line == 1 and [m["content"] for m in first.messages] == ["be brief", "a", "old", "b"]
    assert second.line == 3 and second.messages == [{"role": "user", "content": "no answer yet"}]
    assert second.tools == tools


def test_plain_lines_are_user_messages_and_system_is_prepended_only_where_there_is_none(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\ufeffwhat is 2+2?\n\n   \n  name a colour  \r\n")
    prompts = read_prompts(path, system="answer in French")
    assert [(p.line, p.messages) for p in prompts] == [
        (1, [{"role": "system", "content": "answer in French"}, {"role": "user", "content": "what is 2+2?"}]),
        (4, [{"role": "system", "content": "answer in French"}, {"role": "user", "content": "name a colour"}])]
    chat = write_lines(tmp_path / "c.jsonl", [{"messages": [{"role": "system", "content": "own"},
                                                            {"role": "user", "content": "q"}]}])
    assert read_prompts(chat, system="answer in French")[0].messages[0]["content"] == "own"


def test_bad_prompt_lines_stop_before_anything_is_asked_naming_the_lines(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [
        {"messages": [{"role": "user", "content": "fine"}]},
        "{not json",
        {"messages": [{"role": "assistant", "content": "only an answer"}]},
        {"messages": [{"role": "wizard", "content": "x"}]},
    ])
    with pytest.raises(PromptFileError) as err:
        read_prompts(path)
    text = str(err.value)
    assert "3 bad prompt line(s)" in text and "line 2: invalid JSON" in text
    assert "line 3: nothing to ask" in text and "line 4:" in text and "wizard" in text
    with pytest.raises(PromptFileError, match="no such file"):
        read_prompts(tmp_path / "missing.jsonl")


def test_the_prompt_key_is_its_line_and_a_hash_of_what_is_asked():
    msgs = [{"role": "user", "content": "hi"}]
    assert prompt_key(3, msgs) == prompt_key(3, [{"content": "hi", "role": "user"}])
    assert prompt_key(3, msgs).startswith("3:")
    assert len({prompt_key(3, msgs), prompt_key(4, msgs), prompt_key(3, [{"role": "user", "content": "hi!"}]),
                prompt_key(3, msgs, tools=[{"type": "function"}])}) == 4
