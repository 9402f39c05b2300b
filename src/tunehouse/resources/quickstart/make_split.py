"""Rebuild the quickstart dataset from identity_chat.jsonl: a training split and a held-out split.

Usage: python src/tunehouse/resources/quickstart/make_split.py ../shared/datasets/identity_chat.jsonl

Rule (deterministic, no randomness): among the chats whose answer names the assistant "Gemma-FT" and whose
question occurs only once in the file (so no held-out question is ever trained on), every 4th one (the 1st, 5th,
9th, ...) is held out; everything else is training data. Each held-out chat keeps its reference
answer and gets `expected_patterns`: the identity names its reference contains ("Gemma-FT", and "LocalLab"
when present), so the check is "does the model say who it is", whatever the wording.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

NAMES = ["Gemma-FT", "LocalLab"]


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    questions = Counter(row["messages"][0]["content"] for row in rows)
    train, held_out = [], []
    named = 0
    for row in rows:
        answer = row["messages"][-1]["content"]
        if "Gemma-FT" in answer and questions[row["messages"][0]["content"]] == 1:
            named += 1
            if (named - 1) % 4 == 0:
                held_out.append({**row, "expected_patterns": [n for n in NAMES if n in answer]})
                continue
        train.append(row)
    return train, held_out


def main(src: str) -> None:
    rows = [json.loads(line) for line in Path(src).read_text(encoding="utf-8").splitlines() if line.strip()]
    train, held_out = split(rows)
    here = Path(__file__).parent
    for name, part in (("train.jsonl", train), ("heldout.jsonl", held_out)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
        (here / name).write_text(text, encoding="utf-8")
        print(f"{name}: {len(part)} chats")


if __name__ == "__main__":
    main(sys.argv[1])
