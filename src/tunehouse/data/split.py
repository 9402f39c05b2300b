"""Deterministic train/validation split of a JSONL file, keeping every line byte-exact.

Two streaming passes (count, then write), so memory holds only the chosen validation line numbers. Blank
lines are dropped and a BOM at the start of the file is not copied (it would land mid-file); every other byte
of every line, including its line end, is copied as is. Lines keep their original order in both outputs.
The content is not parsed: run `tunehouse validate` on the results.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

_BOM = b"\xef\xbb\xbf"


def _lines(path: Path):
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            if i == 0 and line.startswith(_BOM):
                line = line[len(_BOM):]
            if line.strip():
                yield line if line.endswith(b"\n") else line + b"\n"


def choose_valid(n: int, valid_fraction: float, seed: int) -> set[int]:
    """Indices (0-based, among non-blank lines) that go to the validation file: at least 1, at most n - 1."""
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be between 0 and 1 (exclusive), not {valid_fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 examples to split, the file has {n}")
    k = min(n - 1, max(1, round(n * valid_fraction)))
    return set(random.Random(seed).sample(range(n), k))


def split_file(path: str | Path, out_dir: str | Path, valid_fraction: float = 0.1, seed: int = 0,
               names: tuple[str, str] = ("train.jsonl", "valid.jsonl")) -> tuple[Path, Path, int, int]:
    """Write out_dir/train.jsonl and out_dir/valid.jsonl; return (train path, valid path, n_train, n_valid)."""
    path, out_dir = Path(path), Path(out_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    targets = [out_dir / name for name in names]
    if any(t.exists() and t.resolve() == path.resolve() for t in targets):
        raise ValueError(f"{path} would be overwritten by the split; choose another --out-dir")
    n = sum(1 for _ in _lines(path))
    valid = choose_valid(n, valid_fraction, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Write to temporary files and rename at the end, so a failure never leaves half-written outputs.
    tmp = [tempfile.NamedTemporaryFile("wb", dir=out_dir, prefix=f".{t.name}.", delete=False) for t in targets]
    try:
        with tmp[0] as train_f, tmp[1] as valid_f:
            for i, line in enumerate(_lines(path)):
                (valid_f if i in valid else train_f).write(line)
        for t, target in zip(tmp, targets, strict=True):
            os.replace(t.name, target)
    finally:
        for t in tmp:
            if os.path.exists(t.name):
                os.unlink(t.name)
    return targets[0], targets[1], n - len(valid), len(valid)
