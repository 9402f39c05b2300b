"""The `auto` epoch rule, one copy for `tunehouse validate`'s estimate, the holdout plan and the training engine.

`auto_n_epochs` is OpenAI's rule from the cookbook ("Data preparation and analysis for chat model fine-tuning")
with its upper target measured here (2,000 examples seen instead of 25,000): the epoch count, or with validation
data (tunehouse.data.holdout) the most epochs, as training then stops when validation loss stops improving.
"""

from __future__ import annotations

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 2_000  # the cookbook's 25,000, lowered: see auto_n_epochs
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def auto_n_epochs(n_examples: int) -> int:
    """OpenAI's default epochs: 3, raised for small files (to ~100 examples seen) and lowered for large ones (to
    ~2,000 examples seen; the cookbook says 25,000). Why 2,000: on 1000 WikiSQL chats the third epoch never
    helped, at either learning rate (docs/training.md, "`auto` hyperparameters"), while on 300 it still did."""
    if n_examples < 1:
        raise ValueError("auto_n_epochs needs at least one example")
    n_epochs = TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        n_epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    elif n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        n_epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return n_epochs
