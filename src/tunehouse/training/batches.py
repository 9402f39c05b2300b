"""Training data for the loop: JSONL -> encoded examples (chats, or preference pairs for DPO), and a seeded,
length-grouped batch order.

The order of epoch e is a pure function of (seed, e), so a resumed run only needs (epoch, batch index) to
continue exactly where it stopped.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tunehouse.data.render import IGNORE, encode_example, encode_preference

# Batches are formed inside shuffled groups of this many batches, sorted by length: little padding, yet
# every epoch still mixes short and long examples across steps.
GROUP_BATCHES = 16
# Padded tokens per forward pass; a larger optimizer batch is split into micro-batches (gradient accumulation).
MICRO_BATCH_TOKENS = 4096


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    line: int  # 1-based line in the source file, for messages

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels[1:] if x != IGNORE)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


@dataclass
class Pair:
    """A DPO example: prompt + preferred output, prompt + non-preferred output, and their reference log-probs."""

    chosen: Encoded
    rejected: Encoded
    line: int
    ref_chosen: float | None = None  # summed log-prob under the starting model, filled once before training
    ref_rejected: float | None = None

    @property
    def n_trained(self) -> int:
        return self.chosen.n_trained + self.rejected.n_trained

    @property
    def n_tokens(self) -> int:
        return self.chosen.n_tokens + self.rejected.n_tokens


def read_examples(path: Path) -> list[tuple[int, dict]]:
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                example = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{Path(path).name} line {number}: invalid JSON ({exc.msg})") from None
            if not isinstance(example, dict):
                raise ValueError(f"{Path(path).name} line {number}: expected a JSON object")
            examples.append((number, example))
    if not examples:
        raise ValueError(f"{Path(path).name} has no examples")
    return examples


def _encode_one(example: dict, number: int, encode, family, max_length: int, method: str):
    """(Encoded or Pair, truncated, has trained tokens on every side)."""
    if method == "dpo":
        (c_ids, c_labels), (r_ids, r_labels), cut = encode_preference(example, encode, family, max_length)
        pair = Pair(Encoded(c_ids, c_labels, number), Encoded(r_ids, r_labels, number), number)
        return pair, cut, pair.chosen.n_trained > 0 and pair.rejected.n_trained > 0
    ids, labels, cut = encode_example(example, encode, family, max_length)
    enc = Encoded(ids, labels, number)
    return enc, cut, enc.n_trained > 0


def encode_file(path: Path, encode, family, max_length: int, on_warn=None, method: str = "supervised") -> list:
    """Encoded examples (Pair for "dpo") with trained tokens; truncations and skips are reported via on_warn."""
    out, truncated, skipped = [], [], []
    for number, example in read_examples(path):
        try:
            item, was_truncated, trainable = _encode_one(example, number, encode, family, max_length, method)
        except ValueError as exc:
            raise ValueError(f"{Path(path).name} line {number}: {exc}") from None
        if was_truncated:
            truncated.append(number)
        if not trainable:
            skipped.append(number)
            continue
        out.append(item)
    what = "output" if method == "dpo" else "assistant"
    if on_warn and truncated:
        on_warn(f"{len(truncated)} example(s) in {Path(path).name} exceed {max_length} tokens and were truncated "
                f"(lines {_lines(truncated)})", {"lines": truncated, "max_length": max_length})
    if on_warn and skipped:
        on_warn(f"{len(skipped)} example(s) in {Path(path).name} have no trained {what} tokens (after "
                f"truncation) and were skipped (lines {_lines(skipped)})", {"lines": skipped})
    if not out:
        raise ValueError(f"{Path(path).name} has no example with a trained {what} message")
    return out


def _lines(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of example indices for one epoch: shuffled, length-grouped, then the batches shuffled again."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    group = batch_size * GROUP_BATCHES
    for g in range(0, len(order), group):
        chunk = sorted(order[g : g + group], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def micro_batches(indices: list[int], lengths: list[int], token_budget: int = MICRO_BATCH_TOKENS) -> list[list[int]]:
    """Split one optimizer batch (sorted by length) so each padded micro-batch stays within the token budget."""
    out, current = [], []
    for i in sorted(indices, key=lambda i: lengths[i]):
        if current and (len(current) + 1) * lengths[i] > token_budget:
            out.append(current)
            current = []
        current.append(i)
    if current:
        out.append(current)
    return out


def collate(examples: list[Encoded], pad_id: int):
    """Right-padded (input_ids, attention_mask, labels) tensors."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels)
    return ids, mask, labels
