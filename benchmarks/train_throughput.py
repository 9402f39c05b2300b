"""Training throughput: tunehouse's engine vs TRL's SFTTrainer on the same wikisql examples, side by side.

    .venv/bin/pip install -c constraints/cpu.txt -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/train_throughput.py [--examples 64] [--default-steps 3] \
        [--runs trl_default,tunehouse,tunehouse_bf16,trl_tuned]

Same base (Gemma 3 270M, fp32 weights), same tokens (our rendering; TRL gets input_ids + completion_mask, so
both train exactly the assistant tokens and the end-of-turn), same LoRA (r16, alpha 32, all linear, no
dropout), batch 8, lr 2e-4 (no warmup, cosine to 10%), 1 epoch, seed 0. Each run is its own process. Per run:
real tokens/s (no padding) and trained tokens/s over steps 2..N (step 1 is warm-up), peak RSS, and the loss of
the final adapter on 32 held-out wikisql_valid chats, computed the same way for both. TRL with its defaults
(bf16 autocast + gradient checkpointing) is very slow on this CPU, so it runs only --default-steps steps.
GFLOP/s counts the matmul work each run performs: 4 x body params per token (forward + input gradients; frozen base)
plus 4 x vocab x hidden per position where the head runs (all positions for TRL, trained ones for us),
against a measured fp32 matmul peak. `tunehouse_bf16` is the same engine with `train_precision` bf16 (the frozen
base in bf16, LoRA and loss in fp32; scored on the fp32 base); the bf16 matmul peak is printed beside the fp32
one (on AMX CPUs it is several times higher). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
LR, BATCH, R, ALPHA, SEED = 2e-4, 8, 16, 32, 0
RUNS = ("trl_default", "tunehouse", "tunehouse_bf16", "trl_tuned")


def data_files(n: int, work: Path) -> tuple[Path, Path]:
    work.mkdir(parents=True, exist_ok=True)
    train, valid = work / f"wikisql_train_{n}.jsonl", work / "wikisql_valid_32.jsonl"
    train.write_text("".join((SHARED / "wikisql_train.jsonl").read_text().splitlines(True)[:n]))
    valid.write_text("".join((SHARED / "wikisql_valid.jsonl").read_text().splitlines(True)[:32]))
    return train, valid


def encoded(path: Path, tokenizer):
    from tunehouse.training.batches import encode_file

    return encode_file(path, lambda s: tokenizer.encode(s, add_special_tokens=False), "gemma", 1024)


def held_out_loss(model, tokenizer, valid: Path) -> float:
    from tunehouse.training.objectives import SupervisedObjective, evaluate

    ex = encoded(valid, tokenizer)
    return evaluate(SupervisedObjective(0), model, ex, list(range(len(ex))), [e.n_tokens for e in ex], "cpu")["loss"]


def rate(times: list[float], tokens: list[int], trained: list[int]) -> dict:
    """tok/s over steps 2..N: the first step pays one-off warm-up costs."""
    span = times[-1] - times[0]
    return {"steps_timed": len(times) - 1, "seconds": span, "tok_s": sum(tokens[1:]) / span,
            "trained_tok_s": sum(trained[1:]) / span, "tokens": sum(tokens[1:]), "trained_tokens": sum(trained[1:]),
            "s_per_step": span / (len(times) - 1)}


def run_tunehouse(args, precision: str = "fp32") -> dict:
    from peft import PeftModel

    from tunehouse.base_models import load_base_model, model_dir
    from tunehouse.config import Settings
    from tunehouse.training import hparams
    from tunehouse.training.config import TrainingConfig
    from tunehouse.training.engine import train

    train_file, valid = data_files(args.examples, args.work)
    times, tokens, trained = [], [], []

    class Callbacks:
        def on_event(self, level, message, data): pass
        def on_checkpoint(self, checkpoint): pass
        def control(self): return "continue"

        def on_metrics(self, m):
            times.append(time.perf_counter())
            tokens.append(m["step_tokens"])
            trained.append(m["step_trained_tokens"])

    base_dir, family = model_dir(Settings(data_dir=args.data_dir), "gemma-3-270m")
    config = TrainingConfig(base_model="gemma-3-270m", base_model_dir=base_dir, chat_family=family,
                            training_file=train_file, output_dir=args.work / "tunehouse", n_epochs=1,
                            batch_size=BATCH, seed=SEED, lora_r=R,
                            lora_alpha=ALPHA, learning_rate_multiplier=LR / hparams.BASE_LEARNING_RATE,
                            save_every_seconds=1e9, precision=precision)
    result = train(config, Callbacks())
    # scored on the fp32 base (as the reference engine serves it), whatever the training precision
    model, tok, _ = load_base_model(Settings(data_dir=args.data_dir), "gemma-3-270m")
    model = PeftModel.from_pretrained(model, str(result.adapter_dir))
    return {**rate(times, tokens, trained), "loss": held_out_loss(model, tok, valid)}


def run_trl(args, tuned: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunehouse.base_models import ensure_gemma_cache, pick_device
    from tunehouse.config import Settings

    pick_device("cpu")  # same thread count as ours
    path = ensure_gemma_cache(Settings(data_dir=args.data_dir))
    tok = AutoTokenizer.from_pretrained(path)
    train_file, valid = data_files(args.examples, args.work)
    ex = encoded(train_file, tok)
    ds = Dataset.from_list([{"input_ids": e.input_ids, "completion_mask": [int(x != -100) for x in e.labels]}
                            for e in ex])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    torch.manual_seed(SEED)
    model = get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    extra = {"bf16": False, "gradient_checkpointing": False} if tuned else {"max_steps": args.default_steps}
    out_dir = args.work / ("trl_tuned" if tuned else "trl_default")
    cfg = SFTConfig(output_dir=str(out_dir), per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=LR,
                    seed=SEED, completion_only_loss=True, max_length=1024, use_cpu=True,
                    report_to="none", logging_steps=1, save_strategy="no", lr_scheduler_type="cosine_with_min_lr",
                    lr_scheduler_kwargs={"min_lr_rate": 0.1}, warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
                    dataloader_num_workers=0, **extra)
    times, tokens, trained = [], [], []

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
    collate = trainer.data_collator

    def counting_collator(features):
        batch = collate(features)
        tokens.append(int(batch["attention_mask"].sum()) if "attention_mask" in batch
                      else sum(len(f["input_ids"]) for f in features))
        trained.append(int((batch["labels"][:, 1:] != -100).sum()))
        return batch

    trainer.data_collator = counting_collator
    trainer.train()
    tokens, trained = tokens[: len(times)], trained[: len(times)]  # a prefetched, unused batch is not counted
    out = rate(times, tokens, trained)
    out["loss"] = held_out_loss(trainer.model.float(), tok, valid)
    out["bf16"], out["gradient_checkpointing"] = bool(cfg.bf16), bool(cfg.gradient_checkpointing)
    return out


def matmul_peak_gflops(seconds: float = 3.0, dtype: str = "float32") -> float:
    import torch

    from tunehouse.base_models import pick_device

    pick_device("cpu")
    a, b = torch.randn(1024, 1024, dtype=getattr(torch, dtype)), torch.randn(1024, 1024, dtype=getattr(torch, dtype))
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - start) / 1e9


def model_sizes(data_dir: Path) -> tuple[int, int]:
    """(body matmul params without embeddings, vocab x hidden) for the FLOP count."""
    from tunehouse.base_models import ensure_gemma_cache
    from tunehouse.config import Settings

    cfg = json.loads((ensure_gemma_cache(Settings(data_dir=data_dir)) / "config.json").read_text())
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * inter
    return layers * per_layer, cfg["vocab_size"] * h


def child(kind: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, __file__, "--run", kind, "--examples", str(args.examples), "--default-steps",
           str(args.default_steps), "--data-dir", str(args.data_dir), "--work", str(args.work)]
    print(f"== {kind}", flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{kind} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--default-steps", type=int, default=3)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TUNEHOUSE_TEST_CACHE",
                                                                        ROOT / ".cache" / "test-data")))
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-train")
    p.add_argument("--run", choices=list(RUNS))
    p.add_argument("--runs", default=",".join(RUNS), help="which runs, comma-separated (default: all)")
    args = p.parse_args()
    if args.run:
        out = {"tunehouse": run_tunehouse, "tunehouse_bf16": lambda a: run_tunehouse(a, "bf16"),
               "trl_default": lambda a: run_trl(a, False), "trl_tuned": lambda a: run_trl(a, True)}[args.run](args)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return

    peak, peak_bf16 = matmul_peak_gflops(), matmul_peak_gflops(dtype="bfloat16")
    print(f"matmul peak (1024^3): fp32 {peak:.0f} GFLOP/s, bf16 {peak_bf16:.0f} GFLOP/s; load {os.getloadavg()[0]:.2f}")
    body, head = model_sizes(args.data_dir)
    # TRL defaults first: the likeliest to fail, so a broken setup shows early.
    runs = {k: child(k, args) for k in RUNS if k in args.runs.split(",")}
    for kind, r in runs.items():
        head_positions = r["trained_tokens"] if kind.startswith("tunehouse") else r["tokens"]
        r["gflop_s"] = (4 * body * r["tokens"] + 4 * head * head_positions) / r["seconds"] / 1e9
        print(f"{kind:12s} {r['tok_s']:8.1f} tok/s  {r['trained_tok_s']:7.1f} trained tok/s  "
              f"{r['s_per_step']:7.1f} s/step  loss {r['loss']:.4f}  peak RSS {r['peak_rss_mb']:7.0f} MB  "
              f"{r['gflop_s']:6.1f} GFLOP/s ({100 * r['gflop_s'] / peak:.0f}% of {peak:.0f} matmul peak)")
    summary = {"examples": args.examples, "matmul_peak_gflop_s": round(peak, 1),
               "matmul_peak_bf16_gflop_s": round(peak_bf16, 1), "load_avg_1m": round(os.getloadavg()[0], 2),
               **{f"{k}_{m}": round(r[m], 4 if m == "loss" else 1) for k, r in runs.items()
                  for m in ("tok_s", "trained_tok_s", "s_per_step", "loss", "gflop_s", "peak_rss_mb")}}
    if {"tunehouse", "trl_default", "trl_tuned"} <= set(runs):
        summary.update(comparison(runs))
    print(json.dumps(summary))


def comparison(runs: dict) -> dict:
    th, trl_d, trl_t = runs["tunehouse"], runs["trl_default"], runs["trl_tuned"]
    return {
        "tunehouse_tok_s": round(th["tok_s"], 1), "trl_default_tok_s": round(trl_d["tok_s"], 1),
        "trl_tuned_tok_s": round(trl_t["tok_s"], 1),
        "ratio_vs_default": round(th["tok_s"] / trl_d["tok_s"], 2),
        "ratio_vs_tuned": round(th["tok_s"] / trl_t["tok_s"], 2),
        "tunehouse_trained_tok_s": round(th["trained_tok_s"], 1),
        "trl_tuned_trained_tok_s": round(trl_t["trained_tok_s"], 1),
        "loss_tunehouse": round(th["loss"], 4), "loss_trl": round(trl_t["loss"], 4),
        "loss_rel_diff": round(abs(th["loss"] - trl_t["loss"]) / trl_t["loss"], 4),
        "tunehouse_gflop_s": round(th["gflop_s"], 1), "trl_tuned_gflop_s": round(trl_t["gflop_s"], 1),
    }


if __name__ == "__main__":
    main()
