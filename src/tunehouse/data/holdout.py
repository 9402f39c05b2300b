"""Validation-driven training's plan: when `n_epochs: auto` measures validation loss, and the held-out slice it
uses when the job has no validation file. One copy, shared by the training engine and `tunehouse validate`.

Why these numbers (docs/training.md, "Validation-driven `auto`"): the held-out loss needs enough examples to be
a stable signal, and removing them must not cost the model much. So a file of at least MIN_EXAMPLES_FOR_HOLDOUT
(200) examples gives up HOLDOUT_FRACTION (5%) of them, at least MIN_HOLDOUT (10) and at most MAX_HOLDOUT (100):
200 -> 10, 1000 -> 50, 2000 and more -> 100. Smaller files train on everything, with the fixed `auto` epochs
and no early stopping. Which examples: a seeded sample (the job's seed), so a resumed job holds out the same.
DPO jobs are not validation-driven: their held-out DPO loss keeps falling towards 0 as the margins grow, also
while generation gets worse (docs/training.md, DPO measurements), so it is no stopping signal.
"""

from __future__ import annotations

import random

MIN_EXAMPLES_FOR_HOLDOUT = 200
HOLDOUT_FRACTION = 0.05
MIN_HOLDOUT = 10
MAX_HOLDOUT = 100


def holdout_size(n_examples: int) -> int:
    """How many training examples `auto` holds out for validation when there is no validation file (0: none)."""
    if n_examples < MIN_EXAMPLES_FOR_HOLDOUT:
        return 0
    return min(MAX_HOLDOUT, max(MIN_HOLDOUT, round(n_examples * HOLDOUT_FRACTION)))


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
    return {"early_stopping": k > 0, "holdout_examples": k}
