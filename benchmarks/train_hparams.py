"""Learning-rate / batch-size sweep behind tunehouse's `auto` defaults (docs/training.md cites its output).

    .venv/bin/python benchmarks/train_hparams.py --examples 300 --epochs 1 --eval 100 [--precision bf16] \
        --configs 2:2e-4 2:5e-4 2:1e-3 8:2e-4 8:1e-3 4:5e-4

Each config trains Gemma 3 270M with the real engine (`tunehouse.training.engine.train`) on the first N
wikisql_train chats (--epochs, default auto), then loads the final adapter with transformers and reports the
held-out loss and greedy exact match on the first --eval wikisql_valid chats, plus training wall time and real
tokens/s over steps 2..N. Exact match: --em forced (default; one teacher-forced pass, token-exact, see
`forced_scores`) or --em generate (greedy `generate` + the `tunehouse eval` normalized rule; ~10x slower).
--adapter DIR only scores an existing adapter. One JSON line
per config as it finishes (so a crash loses at most one config); the last line is all of them.
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


def forced_scores(model, tok, valid: Path) -> tuple[float, float]:
    """(held-out loss, greedy exact match) in one teacher-forced pass, the LM head run only at trained positions.

    Greedy decoding reproduces the reference and then stops iff, fed the reference, the model's argmax is the next
    reference token at every trained position (the answer's tokens and the <end_of_turn> after it), so this is
    greedy exact match without generating (one forward per example instead of up to 64 decode steps). It is
    token-exact, so at or below the normalized rule of `tunehouse eval` (which also forgives case and spaces).
    The loss is the mean over all trained tokens, as `held_out_loss` computes it."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from train_throughput import encoded

    from tunehouse.training.loss import causal_lm

    lm = causal_lm(model)
    cap = getattr(lm.config, "final_logit_softcapping", None)
    hits = loss = count = 0
    examples = encoded(valid, tok)
    with torch.no_grad():
        for e in examples:
            ids, labels = torch.tensor([e.input_ids]), torch.tensor(e.labels[1:])
            hidden = lm.get_decoder()(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            keep = labels != -100
            logits = lm.get_output_embeddings()(hidden.last_hidden_state[0, :-1][keep]).float()
            if cap:
                logits = torch.tanh(logits / cap) * cap
            y = labels[keep]
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            count += int(y.numel())
            hits += bool((logits.argmax(-1) == y).all())
    return loss / count, hits / len(examples)


def scores(model, tok, valid: Path, rule: str) -> tuple[float, float]:
    if rule == "forced":
        return forced_scores(model, tok, valid)
    from train_throughput import held_out_loss

    return held_out_loss(model, tok, valid), exact_match(model, tok, valid)


def exact_match(model, tok, valid: Path) -> float:
    import torch

    from tunehouse.data.render import render_prompt
    from tunehouse.eval.metrics import exact_match as same

    rows = [json.loads(x) for x in valid.read_text().splitlines()]
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
            hits += same(tok.decode(seq, skip_special_tokens=True), r["messages"][-1]["content"])
    return hits / len(rows)


def run(bs: int | str, lr: float | str, rank: int, args) -> dict:
    from peft import PeftModel
    from train_throughput import SHARED, data_files

    from tunehouse.base_models import load_base_model, model_dir
    from tunehouse.config import Settings
    from tunehouse.training import hparams
    from tunehouse.training.config import TrainingConfig
    from tunehouse.training.engine import train

    train_file, _ = data_files(args.examples, args.work)
    valid = args.work / f"wikisql_valid_{args.eval}.jsonl"
    valid.write_text("".join((SHARED / "wikisql_valid.jsonl").read_text().splitlines(True)[: args.eval]))
    times, tokens = [], []

    class Callbacks:
        def on_event(self, *a): pass
        def on_checkpoint(self, c): pass
        def control(self): return "continue"

        def on_metrics(self, m):
            times.append(time.perf_counter())
            tokens.append(m["step_tokens"])
            if m["step"] % 10 == 0 or m["step"] == m["total_steps"]:
                print(f"  step {m['step']}/{m['total_steps']} loss {m['train_loss']:.4f}", file=sys.stderr,
                      flush=True)

    start = time.perf_counter()
    base_dir, family = model_dir(Settings(data_dir=args.data_dir), "gemma-3-270m")
    name = f"n{args.examples}-e{args.epochs}-bs{bs}-lr{lr}-r{rank}-{args.precision}" + \
        (f"-seed{args.seed}" if args.seed else "")
    config = TrainingConfig(base_model="gemma-3-270m", base_model_dir=base_dir, chat_family=family,
                            training_file=train_file, output_dir=args.work / name,
                            batch_size=bs, n_epochs=args.epochs if args.epochs == "auto" else int(args.epochs),
                            learning_rate_multiplier=lr if lr == "auto" else lr / hparams.BASE_LEARNING_RATE,
                            lora_r=rank, lora_alpha=2 * rank, precision=args.precision, seed=args.seed,
                            save_every_seconds=1e9)
    result = train(config, Callbacks())
    seconds = time.perf_counter() - start
    tok_s = sum(tokens[1:]) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
    model, tok, _ = load_base_model(Settings(data_dir=args.data_dir), "gemma-3-270m")
    model = PeftModel.from_pretrained(model, str(result.adapter_dir)).eval()
    eval_start = time.perf_counter()
    loss, em = scores(model, tok, valid, args.em)
    hp = result.hyperparameters
    out = {"examples": args.examples, "batch_size": hp["batch_size"], "lr": hparams.BASE_LEARNING_RATE *
           hp["learning_rate_multiplier"], "rank": rank, "precision": args.precision, "n_epochs": hp["n_epochs"],
           "seed": args.seed,
           "steps": len(times), "best_step": result.best_step, "stopped_early": result.stopped_early,
           "train_seconds": round(seconds), "tok_s": round(tok_s, 1),
           "final_train_loss": round(result.metrics[-1]["train_loss"], 4), "valid_loss": round(loss, 4),
           "exact_match": em, "em_rule": args.em,
           "eval_n": args.eval}
    out["eval_seconds"] = round(time.perf_counter() - eval_start)
    out["load_avg"] = round(os.getloadavg()[0], 1)
    return out


def evaluate_adapter(args) -> dict:
    from peft import PeftModel
    from train_throughput import SHARED

    from tunehouse.base_models import load_base_model
    from tunehouse.config import Settings

    valid = args.work / f"wikisql_valid_{args.eval}.jsonl"
    valid.parent.mkdir(parents=True, exist_ok=True)
    valid.write_text("".join((SHARED / "wikisql_valid.jsonl").read_text().splitlines(True)[: args.eval]))
    model, tok, _ = load_base_model(Settings(data_dir=args.data_dir), "gemma-3-270m")
    model = PeftModel.from_pretrained(model, str(args.adapter)).eval()
    start = time.perf_counter()
    loss, em = scores(model, tok, valid, args.em)
    out = {"adapter": str(args.adapter), "valid_loss": round(loss, 4), "exact_match": em, "em_rule": args.em,
           "eval_n": args.eval}
    out["eval_seconds"] = round(time.perf_counter() - start)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=300)
    p.add_argument("--epochs", default="auto", help="epochs per run, or auto (the cookbook rule)")
    p.add_argument("--eval", type=int, default=100, help="wikisql_valid chats for loss and exact match (max 100)")
    p.add_argument("--em", choices=["forced", "generate"], default="forced",
                   help="exact match by one teacher-forced pass (fast, token-exact) or by greedy generate (slow)")
    p.add_argument("--adapter", type=Path, help="only evaluate this adapter (no training), e.g. to compare --em rules")
    p.add_argument("--configs", nargs="+", default=["2:2e-4", "2:5e-4", "2:1e-3", "8:2e-4", "8:1e-3", "4:5e-4"],
                   help="BATCH:LR[:RANK] (BATCH and LR may be auto; RANK 16 when left out, alpha = 2 x rank), run "
                        "in order; auto:auto with --epochs auto is the product's default job")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="train_precision")
    p.add_argument("--seed", type=int, default=0, help="the training seed (data order, LoRA init)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TUNEHOUSE_TEST_CACHE",
                                                                        ROOT / ".cache" / "test-data")))
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-hparams")
    args = p.parse_args()
    if args.adapter:
        print(json.dumps(evaluate_adapter(args)))
        return
    results = []
    for spec in args.configs:
        bs, lr, *rank = spec.split(":")
        print(f"== batch {bs} lr {lr} rank {rank or 16}", file=sys.stderr, flush=True)
        results.append(run(bs if bs == "auto" else int(bs), lr if lr == "auto" else float(lr),
                           int(rank[0]) if rank else 16, args))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
