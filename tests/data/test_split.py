"""split_file: deterministic, byte-exact, nothing lost, never overwrites its input."""

from __future__ import annotations

import pytest

from tunehouse.data.split import choose_valid, split_file


def _rows(n: int) -> list[bytes]:
    return [b'{"messages": [{"role": "user", "content": "q%d"}, {"role": "assistant", "content": "a"}]}' % i
            for i in range(n)]


def test_same_seed_same_split(tmp_path):
    src = tmp_path / "data.jsonl"
    src.write_bytes(b"\n".join(_rows(50)) + b"\n")
    a = split_file(src, tmp_path / "a", 0.2, seed=7)
    b = split_file(src, tmp_path / "b", 0.2, seed=7)
    c = split_file(src, tmp_path / "c", 0.2, seed=8)
    assert a[1].read_bytes() == b[1].read_bytes() and a[0].read_bytes() == b[0].read_bytes()
    assert a[1].read_bytes() != c[1].read_bytes()
    assert (a[2], a[3]) == (40, 10)


def test_every_line_lands_in_exactly_one_file_byte_exact_and_in_order(tmp_path):
    rows = _rows(30)
    src = tmp_path / "data.jsonl"
    src.write_bytes(b"".join(r + b"\r\n" for r in rows))  # CRLF is kept as is
    train, valid, _, _ = split_file(src, tmp_path / "out", 0.3, seed=0)
    t, v = train.read_bytes().split(b"\r\n")[:-1], valid.read_bytes().split(b"\r\n")[:-1]
    assert sorted(t + v) == sorted(rows)
    assert t == [r for r in rows if r in t] and v == [r for r in rows if r in v]


def test_bom_and_blank_lines_are_dropped_and_last_line_gets_a_newline(tmp_path):
    rows = _rows(4)
    src = tmp_path / "data.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + rows[0] + b"\n\n" + rows[1] + b"\n  \n" + rows[2] + b"\n" + rows[3])
    train, valid, n_train, n_valid = split_file(src, tmp_path / "out", 0.25, seed=0)
    lines = train.read_bytes().splitlines(keepends=True) + valid.read_bytes().splitlines(keepends=True)
    assert sorted(lines) == sorted(r + b"\n" for r in rows) and (n_train, n_valid) == (3, 1)


def test_at_least_one_example_on_each_side():
    assert len(choose_valid(2, 0.01, 0)) == 1
    assert len(choose_valid(10, 0.99, 0)) == 9


def test_too_few_examples_or_bad_fraction_are_errors():
    with pytest.raises(ValueError, match="at least 2"):
        choose_valid(1, 0.1, 0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        choose_valid(10, 0.0, 0)


def test_refuses_to_overwrite_its_input(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_bytes(b"\n".join(_rows(10)) + b"\n")
    before = src.read_bytes()
    with pytest.raises(ValueError, match="overwritten"):
        split_file(src, tmp_path, 0.1, 0)
    assert src.read_bytes() == before
