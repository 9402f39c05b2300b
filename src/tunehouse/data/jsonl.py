"""Streaming JSONL reader: one record per non-blank line, 1-based line numbers, bounded memory.

Never raises on bad content: every line comes back as a `JsonlLine` carrying either the parsed value or an
error (code + message), so a validator can report every problem in one pass. Accepted the way OpenAI accepts
them: a UTF-8 BOM, CRLF line ends, blank lines. Reported clearly: invalid/truncated JSON (with column),
non-UTF-8 bytes (with byte offset), a JSON array instead of JSONL, a binary file, over-long lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A single example above this is certainly a mistake (a whole file without newlines, a binary blob);
# reading it would hold it all in memory. 8 MiB is far beyond any model context.
MAX_LINE_BYTES = 8 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_SNIFF_BYTES = 8192
_ARRAY_HINT = "the file is a JSON array, not JSONL: put one example object per line (jq -c '.[]' in.json > out.jsonl)"

_decoder = json.JSONDecoder()


@dataclass
class JsonlLine:
    line: int  # 1-based line number in the file
    value: Any = None  # the parsed JSON value when error is None
    raw: bytes = b""  # the line's bytes without BOM and line end (empty for over-long lines)
    error: str | None = None  # invalid_json | not_utf8 | line_too_long | data_type
    message: str = ""
    fatal: bool = False  # the rest of the file cannot be read as JSONL (binary file, JSON array)


class JsonlFileError(OSError):
    """The file cannot be opened at all (missing, a directory, no permission)."""


def _json_error(text: str, exc: json.JSONDecodeError, at_eof_without_newline: bool) -> str:
    where = f"column {exc.colno}" if exc.lineno == 1 else f"line {exc.lineno} of the value, column {exc.colno}"
    if (exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")) and text.strip():
        hint = " (the line ends mid-value: truncated?)"
        if at_eof_without_newline:
            hint = " (the file ends mid-value: truncated?)"
        return f"invalid JSON at {where}: {exc.msg}{hint}"
    return f"invalid JSON at {where}: {exc.msg}"


def parse_line(number: int, raw: bytes, last: bool = False) -> JsonlLine:
    """Decode and parse one line's bytes (no line end) into a JsonlLine."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return JsonlLine(number, raw=raw, error="not_utf8",
                         message=f"not valid UTF-8 at byte {exc.start + 1} of the line (0x{raw[exc.start]:02x}); "
                                 "save the file as UTF-8")
    try:
        value, end = _decoder.raw_decode(text, _skip_ws(text))
    except json.JSONDecodeError as exc:
        return JsonlLine(number, raw=raw, error="invalid_json", message=_json_error(text, exc, last))
    except RecursionError:
        return JsonlLine(number, raw=raw, error="invalid_json", message="invalid JSON: nested too deeply")
    rest = text[end:].strip()
    if rest:
        col = end + 1 + (len(text[end:]) - len(text[end:].lstrip()))
        return JsonlLine(number, raw=raw, error="invalid_json",
                         message=f"invalid JSON at column {col}: extra data after the value "
                                 "(two examples on one line, or a pretty-printed file?)")
    return JsonlLine(number, value=value, raw=raw)


def _skip_ws(text: str) -> int:
    return len(text) - len(text.lstrip())


def _open(path: str | Path):
    try:
        return open(path, "rb")  # closed by the callers' `with`
    except FileNotFoundError as exc:
        raise JsonlFileError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise JsonlFileError(f"{path}: is a directory, not a file") from exc
    except PermissionError as exc:
        raise JsonlFileError(f"{path}: permission denied") from exc
    except OSError as exc:
        raise JsonlFileError(f"{path}: {exc.strerror or exc}") from exc


def iter_raw_lines(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None, bool]]:
    """(line number, bytes without line end or None if over-long, had_newline) for every line, BOM stripped."""
    f = _open(path)
    with f:
        number = 0
        while True:
            chunk = f.readline(max_line_bytes + 1)
            if not chunk:
                return
            number += 1
            if number == 1 and chunk.startswith(_BOM):
                chunk = chunk[len(_BOM):]
            if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
                # Skip the rest of this line in bounded chunks.
                while chunk and not chunk.endswith(b"\n"):
                    chunk = f.readline(1024 * 1024)
                yield number, None, bool(chunk)
                continue
            had_newline = chunk.endswith(b"\n")
            yield number, chunk.rstrip(b"\r\n"), had_newline


def _sniff(path: str | Path) -> bytes:
    f = _open(path)
    with f:
        return f.read(_SNIFF_BYTES)


def read_jsonl(path: str | Path, max_line_bytes: int | None = None) -> Iterator[JsonlLine]:
    """Yield a JsonlLine for every non-blank line of `path`; raise JsonlFileError only if it cannot be opened.

    Memory is bounded by `max_line_bytes` (one line at a time). A binary file or a (pretty-printed) JSON array
    yields one fatal error instead of one error per line.
    """
    max_line_bytes = max_line_bytes or MAX_LINE_BYTES
    head = _sniff(path)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        yield JsonlLine(1, error="not_utf8", fatal=True, message="the file is UTF-16 encoded; save it as UTF-8")
        return
    nul = head.find(b"\x00")
    if nul >= 0:
        yield JsonlLine(1, error="not_utf8", fatal=True,
                        message=f"this looks like a binary file (NUL byte at offset {nul}), not UTF-8 text JSONL")
        return
    for number, raw, had_newline in iter_raw_lines(path, max_line_bytes):
        if raw is None:
            limit = f"{max_line_bytes / 2**20:g} MiB" if max_line_bytes >= 2**20 else f"{max_line_bytes} bytes"
            yield JsonlLine(number, error="line_too_long",
                            message=f"line is longer than {limit}; each line must hold one example")
            continue
        if not raw.strip():
            continue
        item = parse_line(number, raw, last=not had_newline)
        if item.error == "invalid_json" and number == 1 and raw.lstrip().startswith(b"["):
            # A JSON array (usually pretty-printed): every later line would be garbage too.
            item = JsonlLine(1, raw=raw, error="data_type", fatal=True,
                             message=_ARRAY_HINT)
            yield item
            return
        if item.error is None and isinstance(item.value, list) and number == 1:
            item = JsonlLine(1, raw=raw, error="data_type",
                             message=_ARRAY_HINT)
        yield item
