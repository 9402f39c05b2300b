"""The quickstart's fixed parts: its shipped dataset, its job settings and its success criterion.

The task (see resources/quickstart/README.md): teach Gemma 3 270M a new identity ("Gemma-FT" by "LocalLab")
from 72 chats, then check on 19 held-out questions whether it states that identity. The base model never can,
so any pass is learned; a few minutes of LoRA on this CPU are enough.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from tunehouse.eval.comparison import EvalOptions, EvalResult

BASE_MODEL = "gemma-3-270m"
SUFFIX = "quickstart"
# Measured on this task: 3 epochs at batch 4 (54 steps), multiplier 2 (peak learning rate 4e-4 on the 2e-4 base)
# took the held-out identity pass rate from 0% (base) to 84% in a 4.2 min quickstart on an idle 2-core CPU.
# Explicit values keep the run's length independent of the `auto` rules.
HYPERPARAMETERS = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 2.0}
SEED = 0
# Every held-out reference names the identity within its first 65 characters (at most ~35 tokens), so 48 leave
# room for a longer wording while a rambling base model is cut off early (it dominates the evaluation's time).
EVAL_OPTIONS = EvalOptions(temperature=0.0, max_tokens=48)
METRIC = "pattern_pass"
REQUIRED_GAIN = 0.5  # the tuned model must beat its base by at least 50 points on METRIC


def copy_dataset(dest: Path) -> tuple[Path, Path]:
    """Copy the shipped train/held-out files into `dest`; returns (train, heldout) paths."""
    dest.mkdir(parents=True, exist_ok=True)
    src = files("tunehouse").joinpath("resources", "quickstart")
    out = []
    for name in ("train.jsonl", "heldout.jsonl"):
        (dest / name).write_bytes(src.joinpath(name).read_bytes())
        out.append(dest / name)
    return out[0], out[1]


def verdict(result: EvalResult) -> tuple[bool, float]:
    """(passed, gain in points) of the tuned model over its base on the quickstart metric."""
    s = result.summary()
    gain = (s["model"][METRIC] or 0.0) - (s["baseline"][METRIC] or 0.0)
    return gain >= REQUIRED_GAIN, 100 * gain
