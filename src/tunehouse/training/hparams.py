"""The `auto` hyperparameter rules: n_epochs, batch_size, learning_rate_multiplier -> concrete values.

- n_epochs: the OpenAI cookbook rule with a lower upper target, from tunehouse.data.epochs (one copy, so
  `tunehouse validate`'s estimates and training agree): 3 epochs; min(25, 100 // n) for small files,
  max(1, 2000 // n) for large (the cookbook: 25000 // n); 1000 examples -> 2.
- batch_size: about 1% of the examples, rounded down to a power of two, within 1..32: 8 at 1000 examples
  (at 300 chats batch 4 matched 8 and 16 had too few steps; docs/training.md).
  On CPU the time per token barely depends on the batch (every token is processed either way), so the batch
  only trades optimizer steps against gradient noise: small data gets small batches and so enough steps to
  learn (30 identity chats -> batch 1; tests/training/test_gemma_identity.py learns the identity so).
- learning rate: BASE_LEARNING_RATE (2e-4, the calibration's value; explicit multipliers keep meaning what they
  meant) x multiplier; the auto multiplier is AUTO_LEARNING_RATE_MULTIPLIER (2.5: 5e-4), the sweep's best rate
  (benchmarks/train_hparams.py; the table in docs/training.md, "`auto` hyperparameters").
- validation-driven `auto` (docs/training.md): with `n_epochs: auto` and validation data (the job's file, or a
  held-out slice when the auto epochs are 3 or more, tunehouse.data.holdout) the auto epochs are an upper
  bound: a full validation pass every eval_interval steps (EVALS_PER_EPOCH times per epoch at most, and at
  each epoch end), the best adapter kept, and a stop after PATIENCE evaluations without a
  MIN_RELATIVE_IMPROVEMENT gain.
"""

from __future__ import annotations

import math

from tunehouse.data import epochs

BASE_LEARNING_RATE = 2e-4
AUTO_LEARNING_RATE_MULTIPLIER = 2.5  # 5e-4: the sweep's best rate at 300 and 1000 WikiSQL chats (docs/training.md)
WARMUP_FRACTION = 0.05
MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 0.0
# DPO `auto`: beta and the learning-rate multiplier chosen by benchmarks/dpo_sweep.py (docs/training.md).
DPO_BETA = 0.1
DPO_LEARNING_RATE_MULTIPLIER = 0.25
# Validation-driven `auto`: at most 4 full validations per epoch, each costing at most 1/3 of the epoch's
# training examples in forward passes (a training example costs ~3 forward passes: ~10% overhead at most).
EVALS_PER_EPOCH = 4
VALID_COST_RATIO = 3
PATIENCE = 3  # evaluations without improvement before stopping (3/4 epoch at 4 per epoch)
MIN_RELATIVE_IMPROVEMENT = 0.01  # an improvement under 1% of the loss does not reset the patience


def auto_n_epochs(n_examples: int) -> int:
    return epochs.auto_n_epochs(n_examples)


def auto_batch_size(n_examples: int) -> int:
    target = max(1, n_examples // 100)
    return max(1, min(32, 2 ** int(math.log2(target))))


def auto_learning_rate_multiplier(batch_size: int) -> float:
    """The same at every batch size: 5e-4 was best at batch 2 and 8 alike; no unmeasured scaling rule on top."""
    return AUTO_LEARNING_RATE_MULTIPLIER


def resolve_hyperparameters(n_examples: int, n_epochs, batch_size, learning_rate_multiplier,
                            method: str = "supervised", beta="auto") -> dict:
    """Concrete values for each `auto`; explicit values are checked and kept. DPO adds `beta`."""
    epochs = auto_n_epochs(n_examples) if n_epochs == "auto" else int(n_epochs)
    bs = auto_batch_size(n_examples) if batch_size == "auto" else int(batch_size)
    bs = min(bs, max(n_examples, 1))  # a batch never exceeds the data (as OpenAI clamps it)
    if learning_rate_multiplier != "auto":
        lrm = float(learning_rate_multiplier)
    else:
        lrm = DPO_LEARNING_RATE_MULTIPLIER if method == "dpo" else auto_learning_rate_multiplier(bs)
    if epochs < 1 or bs < 1 or not lrm > 0:
        raise ValueError(f"Invalid hyperparameters: n_epochs={epochs}, batch_size={bs}, "
                         f"learning_rate_multiplier={lrm} (all must be positive)")
    out = {"n_epochs": epochs, "batch_size": bs, "learning_rate_multiplier": round(lrm, 6)}
    if method == "dpo":
        b = DPO_BETA if beta == "auto" else float(beta)
        if not 0 < b <= 2:
            raise ValueError(f"Invalid hyperparameters: beta={b} (must be in (0, 2], as OpenAI's)")
        out["beta"] = b
    return out


def evals_per_epoch(n_train: int, n_valid: int) -> int:
    """Full validations per epoch: EVALS_PER_EPOCH, fewer when the validation set is large next to the training
    set (1 at least: the epoch end)."""
    return max(1, min(EVALS_PER_EPOCH, n_train // max(1, VALID_COST_RATIO * n_valid)))


def eval_interval(steps_per_epoch: int, n_train: int, n_valid: int) -> int:
    """Steps between full validations within an epoch (the epoch end always validates)."""
    return max(1, math.ceil(steps_per_epoch / evals_per_epoch(n_train, n_valid)))


def improved(loss: float, best: float | None) -> bool:
    """Whether `loss` is enough of an improvement on `best` to reset the early-stopping patience."""
    return best is None or loss < best * (1 - MIN_RELATIVE_IMPROVEMENT)


def lr_at(step: int, total_steps: int, peak: float) -> float:
    """Linear warmup over WARMUP_FRACTION of the steps (at least 1), then cosine decay to 10% of the peak."""
    warmup = max(1, round(WARMUP_FRACTION * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
