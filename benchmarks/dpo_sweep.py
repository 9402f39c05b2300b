"""beta / learning-rate sweep behind DPO's `auto` defaults (docs/training.md cites its output).

    .venv/bin/python benchmarks/dpo_sweep.py --train tests/fixtures/identity_pairs_train.jsonl \
        --valid tests/fixtures/identity_pairs_heldout.jsonl --configs 0.1:0.5 0.1:1 0.1:2.5 0.05:1 0.3:1 --epochs 1

Each config `beta:learning_rate_multiplier` trains Gemma 3 270M with the real engine
(`tunehouse.training.engine.train`, method "dpo") on the preference pairs of --train, then scores the final
adapter on the held-out pairs of --valid: preference accuracy (the share of pairs whose preferred output has
the higher summed log-probability, as `tunehouse eval` measures it), the mean log-prob margin, DPO's held-out
loss and rewards accuracy (the engine's own validation), and how far the preferred outputs' log-probs moved
(DPO can push both sides down; a large drop hurts generation): `preferred_logp_delta` and
`rejected_logp_delta` are the mean changes from the base model on the held-out pairs. The base model's accuracy
and margin come first. --batch-size defaults to "auto" (what a job on the same file gets). One JSON line per
config as it finishes; the last line holds all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def pair_margins(model, tok, path: Path, family) -> list[tuple[float, float]]:
    """Per held-out pair: (log p(preferred), log p(non-preferred)), summed over each output's trained tokens."""
    from tunehouse.training.batches import encode_file
    from tunehouse.training.objectives import pair_logps

    return pair_logps(model, encode_file(path, lambda s: tok.encode(s, add_special_tokens=False), family, 1024,
                                         method="dpo"))


def summarize(margins: list[tuple[float, float]]) -> dict:
    n = len(margins)
    return {"preference_accuracy": round(sum(c > r for c, r in margins) / n, 4),
            "margin": round(sum(c - r for c, r in margins) / n, 3),
            "preferred_logp": round(sum(c for c, _ in margins) / n, 3),
            "rejected_logp": round(sum(r for _, r in margins) / n, 3)}


def run(beta: float, lrm: float, args, base_dir: Path, family, base: dict) -> dict:
    import shutil

    import torch
    from peft import PeftModel

    from tunehouse.base_models import load_model_dir
    from tunehouse.training.config import TrainingConfig
    from tunehouse.training.engine import train

    class Callbacks:
        def on_event(self, *a): pass
        def on_checkpoint(self, c): pass
        def control(self): return "continue"
        def on_metrics(self, m): pass

    out_dir = args.work / f"dpo-b{beta}-m{lrm}-e{args.epochs}-bs{args.batch_size}"
    shutil.rmtree(out_dir, ignore_errors=True)  # a fresh run, never a resumed leftover of an earlier sweep
    start = time.perf_counter()
    config = TrainingConfig(base_model="gemma-3-270m", base_model_dir=base_dir, chat_family=family, method="dpo",
                            training_file=args.train, validation_file=args.valid, beta=beta,
                            output_dir=out_dir, batch_size=args.batch_size,
                            n_epochs=args.epochs, learning_rate_multiplier=lrm, seed=0, save_every_seconds=1e9)
    result = train(config, Callbacks())
    seconds = time.perf_counter() - start
    model, tok, _ = load_model_dir(base_dir, family, "cpu", torch.float32)
    tuned = PeftModel.from_pretrained(model, str(result.adapter_dir)).eval()
    last = result.metrics[-1]
    scores = summarize(pair_margins(tuned, tok, args.valid, family))
    out = {"beta": beta, "learning_rate_multiplier": lrm, **result.hyperparameters, "train_seconds": round(seconds),
           **scores, "preferred_logp_delta": round(scores["preferred_logp"] - base["preferred_logp"], 3),
           "rejected_logp_delta": round(scores["rejected_logp"] - base["rejected_logp"], 3),
           "valid_dpo_loss": round(last.get("full_valid_loss", float("nan")), 4),
           "valid_rewards_accuracy": round(last.get("full_valid_rewards_accuracy", float("nan")), 4),
           "final_train_loss": round(last["train_loss"], 4), "load_avg": round(os.getloadavg()[0], 1)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--valid", type=Path, required=True)
    p.add_argument("--configs", nargs="+", default=["0.1:0.5", "0.1:1", "0.05:0.5", "0.3:0.5"],
                   help="beta:learning_rate_multiplier (x 2e-4)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", default="auto", type=lambda v: v if v == "auto" else int(v))
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TUNEHOUSE_TEST_CACHE", ".cache/test-data")))
    p.add_argument("--work", type=Path, default=Path("/tmp/tunehouse-dpo-sweep"))
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    import torch

    from tunehouse.base_models import load_model_dir, model_dir
    from tunehouse.config import Settings

    base_dir, family = model_dir(Settings(data_dir=args.data_dir), "gemma-3-270m")
    model, tok, _ = load_model_dir(base_dir, family, "cpu", torch.float32)
    rows = [{"config": "base", **summarize(pair_margins(model, tok, args.valid, family))}]
    rows[0]["load_avg"] = round(os.getloadavg()[0], 1)
    print(json.dumps(rows[0]), flush=True)
    del model
    for spec in args.configs:
        beta, lrm = (float(x) for x in spec.split(":"))
        rows.append(run(beta, lrm, args, base_dir, family, rows[0]))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    sys.exit(main())
