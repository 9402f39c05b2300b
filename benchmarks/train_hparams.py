"""Learning-rate / batch-size sweep behind tunehouse's `auto` defaults (docs/training.md cites its output).

    .venv/bin/python benchmarks/train_hparams.py --examples 200 --configs 8:2e-4 8:5e-4 8:1e-3 2:5e-4

Each config trains Gemma 3 270M with the real engine on the first N wikisql_train chats (auto epochs), then
reports held-out loss on 32 wikisql_valid chats and greedy exact match on the first --eval chats, plus wall
time. One JSON line per config; the last line is all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def exact_match(model, tok, valid: Path, n: int) -> float:
    import torch

    from tunehouse.data.render import render_prompt

    rows = [json.loads(x) for x in valid.read_text().splitlines()[:n]]
    end = tok.convert_tokens_to_ids("<end_of_turn>")
    tok.padding_side = "left"
    hits = 0
    for i in range(0, len(rows), 8):
        chunk = rows[i : i + 8]
        prompts = [render_prompt([m for m in r["messages"] if m["role"] != "assistant"]) for r in chunk]
        batch = tok(prompts, add_special_tokens=False, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=64, do_sample=False, eos_token_id=[end, tok.eos_token_id],
                                 pad_token_id=tok.pad_token_id)
        for r, seq in zip(chunk, out[:, batch["input_ids"].shape[1]:], strict=True):
            answer = tok.decode(seq, skip_special_tokens=True).strip()
            hits += answer == r["messages"][-1]["content"].strip()
    return hits / len(rows)


def run(bs: int, lr: float, args) -> dict:
    from peft import PeftModel
    from train_throughput import data_files, held_out_loss

    from tunehouse.config import Settings
    from tunehouse.training import hparams
    from tunehouse.training.base_models import load_base_model
    from tunehouse.training.config import TrainingConfig
    from tunehouse.training.engine import train

    train_file, valid = data_files(args.examples, args.work)

    class Callbacks:
        def on_event(self, *a): pass
        def on_checkpoint(self, c): pass
        def on_metrics(self, m): pass
        def control(self): return "continue"

    start = time.perf_counter()
    config = TrainingConfig(base_model="gemma-3-270m", training_file=train_file, data_dir=args.data_dir,
                            output_dir=args.work / f"bs{bs}-lr{lr}", batch_size=bs,
                            learning_rate_multiplier=lr / hparams.BASE_LEARNING_RATE, seed=0, save_every_seconds=1e9)
    result = train(config, Callbacks())
    seconds = time.perf_counter() - start
    model, tok, _ = load_base_model(Settings(data_dir=args.data_dir), "gemma-3-270m")
    model = PeftModel.from_pretrained(model, str(result.adapter_dir)).eval()
    return {"batch_size": bs, "lr": lr, "n_epochs": result.hyperparameters["n_epochs"],
            "train_seconds": round(seconds), "valid_loss": round(held_out_loss(model, tok, valid), 4),
            "exact_match": exact_match(model, tok, valid, args.eval)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--eval", type=int, default=32)
    p.add_argument("--configs", nargs="+", default=["8:2e-4", "8:5e-4", "8:1e-3", "2:5e-4"])
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TUNEHOUSE_TEST_CACHE",
                                                                        ROOT / ".cache" / "test-data")))
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-hparams")
    args = p.parse_args()
    results = []
    for spec in args.configs:
        bs, lr = spec.split(":")
        results.append(run(int(bs), float(lr), args))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
