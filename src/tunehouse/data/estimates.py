"""Estimates before training: auto epochs, tokens, wall-clock time on this machine, OpenAI's price, size guidance.

The epochs follow `auto_n_epochs` (tunehouse.data.epochs, the rule the training engine resolves
`n_epochs="auto"` to). `overfit_risk` warns when an explicit epoch count goes past that rule. Throughput and prices come
from two data files in tunehouse/resources (one place each, dated and sourced), never from code.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

from tunehouse.data import holdout
from tunehouse.data.epochs import auto_n_epochs

# Data-size guidance (examples needed per goal): (goal, what it means, minimum, recommended, recommended text).
SIZE_GUIDANCE = (
    ("format", "output format or structure", 50, 100, "100-200"),
    ("style", "tone, style or persona", 100, 300, "300-500"),
    ("domain", "domain knowledge or a new task", 500, 1000, "1000+"),
    ("complex", "complex reasoning or behaviour", 1000, 5000, "5000+"),
)


def overfit_risk(n_examples: int, n_epochs: int) -> str | None:
    """The `overfit_risk` warning for an explicit epoch count, or None.

    Rule: more epochs than auto_n_epochs gives for this many examples. 3 epochs of 1000 WikiSQL chats (the
    cookbook's count) ended worse than 1 (exact match 35% vs 38%, held-out loss flat after epoch 1 while training
    loss fell 0.11 -> 0.02; docs/training.md), so past the rule a file is being memorised, and no early stopping
    guards an explicit count.
    """
    if n_examples < 1:
        return None
    limit = auto_n_epochs(n_examples)
    if n_epochs <= limit:
        return None
    return (f"n_epochs={n_epochs} is more than the {limit} epoch(s) of the auto rule for {n_examples} examples: "
            "likely to overfit (memorise the training file); use n_epochs auto (with a validation file it stops "
            f"early and keeps the best checkpoint) or at most {limit}")


def _resource(name: str) -> dict:
    return json.loads(files("tunehouse").joinpath("resources", name).read_text(encoding="utf-8"))


@cache
def load_prices() -> dict:
    """openai_prices.json: {"source", "checked", "per_million_training_tokens": {model: usd}, ...}."""
    return _resource("openai_prices.json")


@cache
def load_throughput_table() -> dict:
    return _resource("throughput.json")


def throughput_for(model: str | None = None, device: str = "cpu") -> dict:
    """The throughput entry for (model, device); the first entry when there is none for that pair."""
    entries = load_throughput_table()["entries"]
    for e in entries:
        if e["model"] == model and e["device"] == device:
            return e
    return entries[0]


def size_guidance(n_examples: int) -> list[dict]:
    """For each goal: minimum, recommended, and where this dataset stands (below_minimum|minimum|recommended)."""
    out = []
    for goal, meaning, minimum, recommended, text in SIZE_GUIDANCE:
        status = "recommended" if n_examples >= recommended else "minimum" if n_examples >= minimum else (
            "below_minimum")
        out.append({"goal": goal, "meaning": meaning, "minimum": minimum, "recommended": text, "status": status})
    return out


def estimate_training(n_examples: int, tokens_per_epoch: int, supervised_tokens_per_epoch: int,
                      model: str | None = None, device: str = "cpu", n_epochs: int | None = None,
                      has_validation_file: bool = False, method: str = "supervised") -> dict:
    """Epochs, total tokens, wall-clock seconds at the recorded throughput, and OpenAI's price for the same job.

    `tokens_per_epoch` counts every token of every example (capped at the training length): that is what a
    training step processes and what OpenAI bills (its job's `trained_tokens` = file tokens x epochs).
    n_epochs None = auto: `early_stopping` says whether it is validation-driven (then n_epochs, tokens and time
    are upper bounds) and `holdout_examples` how many examples it holds out without a validation file (the
    epochs follow the rest, as in training; the token counts still include them).
    """
    plan = holdout.validation_plan(n_examples, n_epochs is None, has_validation_file, method)
    if n_epochs is None:
        n_train = n_examples - plan["holdout_examples"]
        n_epochs = auto_n_epochs(n_train) if n_train else 0
    total = n_epochs * tokens_per_epoch
    tp = throughput_for(model, device)
    prices = load_prices()
    return {
        "n_epochs": n_epochs,
        "tokens_per_epoch": tokens_per_epoch,
        "total_tokens": total,
        "supervised_tokens": n_epochs * supervised_tokens_per_epoch,
        "training_seconds": round(total / tp["tokens_per_second"], 1),
        "throughput": {"model": tp["model"], "device": tp["device"], "tokens_per_second": tp["tokens_per_second"],
                       "source": tp["source"], "exact_model": tp["model"] == model and tp["device"] == device},
        "openai_cost_usd": {m: round(total / 1e6 * p, 4) for m, p in prices["per_million_training_tokens"].items()},
        "openai_prices": {"source": prices["source"], "checked": prices["checked"]},
        "size_guidance": size_guidance(n_examples),
        "early_stopping": plan["early_stopping"],
        "holdout_examples": plan["holdout_examples"],
    }
