"""Helpers for the data tests: write small JSONL files from dicts, strings or raw bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def chat(user: str = "What is the capital of France?", answer: str = "The capital of France is Paris.",
         system: str | None = "You are a geography tutor.") -> dict:
    messages = [{"role": "system", "content": system}] if system is not None else []
    return {"messages": messages + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def good_chats(n: int = 10) -> list[dict]:
    """n distinct, warning-free chat examples."""
    return [chat(user=f"Question number {i}: what is {i} plus {i}?", answer=f"The answer is {2 * i}, of course.")
            for i in range(n)]


def to_bytes(row) -> bytes:
    if isinstance(row, bytes):
        return row
    if isinstance(row, str):
        return row.encode("utf-8")
    return json.dumps(row).encode("utf-8")


@pytest.fixture
def write_jsonl(tmp_path):
    """write_jsonl(rows, name="train.jsonl", end=b"\\n") -> path; rows are dicts, strings or bytes."""
    def write(rows, name: str = "train.jsonl", end: bytes = b"\n") -> Path:
        path = tmp_path / name
        path.write_bytes(b"".join(to_bytes(r) + end for r in rows))
        return path
    return write
