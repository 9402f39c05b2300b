"""Validation-driven training's plan: when `n_epochs: auto` measures validation loss, and the held-out slice it
uses when the job has no validation file. One copy, shared by the training engine and `tunehouse validate`.

Why these numbers (docs/training.md, "Validation-driven `auto`"): the held-out loss needs enough examples to be
a stable signal, and removing them must not cost the model much. So a file of at least MIN_EXAMPLES_FOR_HOLDOUT
(200) examples gives up HOLDOUT_FRACTION (5%) of them, at least MIN_HOLDOUT (10): 200 -> 10, 666 -> 33. Smaller
files train on everything, with the fixed `auto` epochs and no early stopping. So do files whose `auto` epochs are
fewer than MIN_EPOCHS_FOR_HOLDOUT (3, i.e. above 666 examples): on 1000 WikiSQL chats (2 epochs) validation never
stopped a run and the held-out slice only cost data, while keeping a checkpoint from before the end of the
schedule, on a loss a few percent lower, cost exact match. A validation file still drives them. Which examples: a
seeded sample (the job's seed), so a resumed job holds out the same.
DPO jobs are not validation-driven: their held-out DPO loss keeps falling towards 0 as the margins grow, also
while generation gets worse (docs/training.md, DPO measurements), so it is no stopping signal.
"""

from __future__ import annotations

import random

from tunehouse.data.epochs import auto_n_epochs

MIN_EXAMPLES_FOR_HOLDOUT = 200
HOLDOUT_FRACTION = 0.05
MIN_HOLDOUT = 10
MIN_EPOCHS_FOR_HOLDOUT = 3


def holdout_size(n_examples: int) -> int:
    """How many training examples `auto` holds out for validation when there is no validation file (0: none)."""
    if n_examples < MIN_EXAMPLES_FOR_HOLDOUT:
        return 0
    return max(MIN_HOLDOUT, round(n_examples * HOLDOUT_FRACTION))


def holdout_indices(n_examples: int, seed: int) -> list[int]:
    """The held-out examples (0-based indices, sorted): a seeded sample of holdout_size(n_examples)."""
    return sorted(random.Random(seed).sample(range(n_examples), holdout_size(n_examples)))


def validation_plan(n_examples: int, auto_epochs: bool, has_validation_file: bool, method: str) -> dict:
    """{"early_stopping": bool, "holdout_examples": int}: whether training is validation-driven (best checkpoint,
    early stop) and how many training examples it holds out for that."""
    if not auto_epochs or method != "supervised":
        return {"early_stopping": False, "holdout_examples": 0}
    if has_validation_file:
        return {"early_stopping": True, "holdout_examples": 0}
    k = holdout_size(n_examples)
    if k and auto_n_epochs(n_examples) < MIN_EPOCHS_FOR_HOLDOUT:
        k = 0
    return {"early_stopping": k > 0, "holdout_examples": k}
