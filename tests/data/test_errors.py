"""One test per blocking error code: each is reported with its code, at its line, and makes the file untrainable."""

from __future__ import annotations

import json

from tests.data.conftest import chat, good_chats
from tunehouse.data.validation import validate_file


def _errors(path, **kw) -> list[tuple[int | None, str]]:
    return [(e.line, e.code) for e in validate_file(path, **kw).errors]


def _with(bad, at: int = 3) -> list:
    """Ten good examples with `bad` (a dict, string or bytes) inserted as line `at`."""
    rows = good_chats(10)
    rows.insert(at - 1, bad)
    return rows


def test_valid_file_has_no_errors(write_jsonl):
    report = validate_file(write_jsonl(good_chats(12)))
    assert report.ok and report.errors == [] and report.format == "chat" and report.examples == 12


def test_data_type(write_jsonl):
    assert _errors(write_jsonl(_with('"just a string"'))) == [(3, "data_type")]


def test_missing_messages_list(write_jsonl):
    assert _errors(write_jsonl(_with({"messages": []}))) == [(3, "missing_messages_list")]


def test_message_missing_key(write_jsonl):
    bad = {"messages": [{"role": "user"}, {"role": "assistant", "content": "Sure, here it is."}]}
    assert _errors(write_jsonl(_with(bad))) == [(3, "message_missing_key")]


def test_message_unrecognized_key(write_jsonl):
    bad = chat()
    bad["messages"][1]["mood"] = "happy"
    assert _errors(write_jsonl(_with(bad))) == [(3, "message_unrecognized_key")]


def test_unrecognized_role(write_jsonl):
    bad = chat()
    bad["messages"][1]["role"] = "human"
    assert _errors(write_jsonl(_with(bad))) == [(3, "unrecognized_role")]


def test_missing_content(write_jsonl):
    bad = chat(user="")
    assert _errors(write_jsonl(_with(bad))) == [(3, "missing_content")]


def test_non_string_content_is_missing_content(write_jsonl):
    bad = chat()
    bad["messages"][2]["content"] = 42
    assert _errors(write_jsonl(_with(bad))) == [(3, "missing_content")]


def test_example_missing_assistant_message(write_jsonl):
    bad = {"messages": [{"role": "user", "content": "Hello there, anyone?"}]}
    assert _errors(write_jsonl(_with(bad))) == [(3, "example_missing_assistant_message")]


def test_invalid_json(write_jsonl):
    assert _errors(write_jsonl(_with('{"messages": [{"role": "user",}]}'))) == [(3, "invalid_json")]


def test_not_utf8(write_jsonl):
    assert _errors(write_jsonl(_with(b'{"messages": "\xff\xfe"}'))) == [(3, "not_utf8")]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    report = validate_file(path)
    assert [(e.line, e.code) for e in report.errors] == [(None, "empty_file")] and not report.ok


def test_blank_only_file_is_empty_file(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b"\n\n  \r\n")
    assert _errors(path) == [(None, "empty_file")]


def test_too_few_examples(write_jsonl):
    report = validate_file(write_jsonl(good_chats(9)))
    assert [(e.line, e.code) for e in report.errors] == [(None, "too_few_examples")]
    assert not report.ok
    # Uploads accept it (the job fails later, as on OpenAI): easy to tell apart from format errors.
    assert report.blocking_errors(ignore={"too_few_examples"}) == []


def test_mixed_formats(write_jsonl):
    assert _errors(write_jsonl(_with({"prompt": "2+2=", "completion": "4"}))) == [(3, "mixed_formats")]


def test_invalid_weight(write_jsonl):
    bad = chat()
    bad["messages"][2]["weight"] = 0.5
    assert _errors(write_jsonl(_with(bad))) == [(3, "invalid_weight")]


def test_weight_on_a_user_message_is_invalid_weight(write_jsonl):
    bad = chat()
    bad["messages"][1]["weight"] = 1
    assert _errors(write_jsonl(_with(bad))) == [(3, "invalid_weight")]


def test_invalid_tool_call_arguments_must_be_a_json_string(write_jsonl):
    bad = chat()
    bad["messages"][2] = {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": {"city": "Paris"}}}]}
    assert _errors(write_jsonl(_with(bad))) == [(3, "invalid_tool_call")]


def test_line_too_long(write_jsonl, monkeypatch):
    import tunehouse.data.jsonl as jsonl

    monkeypatch.setattr(jsonl, "MAX_LINE_BYTES", 2000)
    assert _errors(write_jsonl(_with(chat(answer="x" * 5000)))) == [(3, "line_too_long")]


def test_every_problem_is_reported_not_just_the_first(write_jsonl):
    bad = {"messages": [{"role": "human", "content": ""}, {"role": "assistant", "content": "Hi!", "weight": 7}]}
    rows = _with(bad, at=2)
    rows.insert(6, "{oops")
    codes = _errors(write_jsonl(rows))
    assert codes == [(2, "unrecognized_role"), (2, "missing_content"), (2, "invalid_weight"), (7, "invalid_json")]


def test_issues_are_capped_per_code_but_all_counted(write_jsonl):
    report = validate_file(write_jsonl(["{bad"] * 250))
    assert report.error_counts["invalid_json"] == 250
    assert sum(e.code == "invalid_json" for e in report.errors) == report.max_issues_per_code == 100


def test_assistant_tool_call_with_null_content_is_valid(write_jsonl):
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": json.dumps({"c": "Oslo"})}}
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    ex = {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                       {"role": "assistant", "content": None, "tool_calls": [call]},
                       {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 3}"},
                       {"role": "assistant", "content": "It is 3 degrees in Oslo right now."}],
          "tools": tools, "parallel_tool_calls": False}
    assert _errors(write_jsonl([ex] + good_chats(10))) == []


def test_text_content_parts_are_valid(write_jsonl):
    ex = chat()
    ex["messages"][1]["content"] = [{"type": "text", "text": "What is the capital of Spain?"}]
    assert _errors(write_jsonl([ex] + good_chats(10))) == []


def test_preference_format(write_jsonl):
    rows = [{"input": {"messages": [{"role": "user", "content": f"Say something nice about {i}."}]},
             "preferred_output": [{"role": "assistant", "content": f"{i} is a truly wonderful number."}],
             "non_preferred_output": [{"role": "assistant", "content": f"{i} is boring and I do not like it."}]}
            for i in range(10)]
    rows[4] = {"input": {"messages": [{"role": "user", "content": "Hello there friend"}]},
               "preferred_output": [{"role": "assistant", "content": "Hello to you too!"}]}
    report = validate_file(write_jsonl(rows))
    assert report.format == "preference"
    assert [(e.line, e.code) for e in report.errors] == [(5, "example_missing_assistant_message")]


def test_preference_completion_aliases_are_accepted(write_jsonl):
    rows = [{"input": {"messages": [{"role": "user", "content": f"Question {i} for you?"}]},
             "preferred_completion": [{"role": "assistant", "content": "A careful, complete answer."}],
             "non_preferred_completion": [{"role": "assistant", "content": "No idea, go away."}]} for i in range(10)]
    report = validate_file(write_jsonl(rows))
    assert report.format == "preference" and report.errors == []


def test_completion_format(write_jsonl):
    rows = [{"prompt": f"{i} + {i} =", "completion": f" {2 * i}, as everybody knows"} for i in range(10)]
    rows[2] = {"prompt": "1 + 1 ="}
    report = validate_file(write_jsonl(rows))
    assert report.format == "completion"
    assert [(e.line, e.code) for e in report.errors] == [(3, "message_missing_key")]
