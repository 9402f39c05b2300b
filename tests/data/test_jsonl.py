"""The streaming JSONL reader: accepted quirks (BOM, CRLF, blank lines) and clear errors for bad input."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from tests.data.conftest import chat
from tunehouse.data.jsonl import JsonlFileError, read_jsonl

ROW = json.dumps(chat()).encode()


def _lines(path, **kw):
    return list(read_jsonl(path, **kw))


def test_line_numbers_are_one_based(write_jsonl):
    items = _lines(write_jsonl([chat(), chat(user="Hi there, how are you?")]))
    assert [i.line for i in items] == [1, 2]
    assert all(i.error is None for i in items)
    assert items[1].value["messages"][1]["content"] == "Hi there, how are you?"


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + ROW + b"\n" + ROW + b"\n")
    items = _lines(path)
    assert [i.error for i in items] == [None, None]
    assert items[0].raw == ROW


def test_crlf_line_ends_are_accepted(write_jsonl):
    items = _lines(write_jsonl([ROW, ROW], end=b"\r\n"))
    assert [(i.line, i.error) for i in items] == [(1, None), (2, None)]


def test_blank_lines_are_skipped_but_keep_numbering(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_bytes(ROW + b"\n\n   \n" + ROW + b"\n\n")
    assert [(i.line, i.error) for i in _lines(path)] == [(1, None), (4, None)]


def test_truncated_last_line_is_invalid_json_with_position(tmp_path):
    path = tmp_path / "truncated.jsonl"
    path.write_bytes(ROW + b"\n" + ROW[:40])
    items = _lines(path)
    assert items[1].line == 2 and items[1].error == "invalid_json"
    assert "column" in items[1].message and "truncated" in items[1].message


def test_invalid_json_reports_the_column(write_jsonl):
    items = _lines(write_jsonl(['{"messages": [}']))
    assert items[0].error == "invalid_json"
    assert "column 15" in items[0].message


def test_two_values_on_one_line_are_invalid_json(write_jsonl):
    items = _lines(write_jsonl([ROW + b" " + ROW]))
    assert items[0].error == "invalid_json" and "extra data" in items[0].message


def test_non_utf8_bytes_are_reported_with_their_offset(write_jsonl):
    items = _lines(write_jsonl([ROW, b'{"messages": "caf\xe9"}', ROW]))
    assert [i.error for i in items] == [None, "not_utf8", None]
    assert items[1].line == 2 and "byte 18" in items[1].message


def test_pretty_printed_json_array_is_one_clear_error(tmp_path):
    path = tmp_path / "array.json"
    path.write_text(json.dumps([chat(), chat()], indent=2))
    items = _lines(path)
    assert len(items) == 1
    assert items[0].error == "data_type" and items[0].fatal and "JSON array" in items[0].message


def test_single_line_json_array_is_data_type_with_a_hint(write_jsonl):
    items = _lines(write_jsonl([json.dumps([chat(), chat()])]))
    assert len(items) == 1 and items[0].error == "data_type" and "jq" in items[0].message


def test_binary_file_is_one_clear_error(tmp_path):
    path = tmp_path / "data.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 100)
    items = _lines(path)
    assert len(items) == 1 and items[0].error == "not_utf8" and "binary" in items[0].message


def test_utf16_file_is_reported_as_such(tmp_path):
    path = tmp_path / "utf16.jsonl"
    path.write_bytes(ROW.decode().encode("utf-16"))
    items = _lines(path)
    assert len(items) == 1 and "UTF-16" in items[0].message


def test_100k_character_line_is_fine(write_jsonl):
    long = chat(answer="word " * 20_000)
    items = _lines(write_jsonl([long]))
    assert items[0].error is None and len(items[0].value["messages"][-1]["content"]) == 100_000


def test_over_long_line_is_an_error_and_reading_continues(write_jsonl):
    items = _lines(write_jsonl([ROW, b'{"x": "' + b"a" * 5000 + b'"}', ROW]), max_line_bytes=1000)
    assert [(i.line, i.error) for i in items] == [(1, None), (2, "line_too_long"), (3, None)]


def test_missing_file_raises_a_clear_error(tmp_path):
    with pytest.raises(JsonlFileError, match="no such file"):
        _lines(tmp_path / "missing.jsonl")


def test_memory_stays_bounded_on_a_large_file(tmp_path):
    # ~12 MB of examples: peak memory of a full read must stay far below the file size.
    path = tmp_path / "large.jsonl"
    with open(path, "wb") as f:
        for _ in range(60_000):
            f.write(ROW + b"\n")
    tracemalloc.start()
    n = sum(1 for _ in read_jsonl(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 60_000
    assert peak < 1_000_000, f"peak {peak} bytes"
