"""DPO throughput: tunehouse's engine vs TRL's DPOTrainer on the same preference pairs, side by side.

    .venv/bin/pip install -c constraints/cpu.txt -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/dpo_throughput.py [--data identity|wikisql] [--pairs 64]

Same base (Gemma 3 270M, fp32), same tokens, same LoRA (r16, alpha 32, all linear, no dropout), sigmoid DPO
loss, beta 0.1, batch 8, lr 1e-4 (tunehouse's schedule: tunehouse.training.hparams.lr_at, given to TRL as its
scheduler, with the same AdamW), grad clip 1.0, 1 epoch, seed 0, no gradient checkpointing. TRL gets our
token ids (prompt_ids / chosen_ids / rejected_ids: its `_prepare_dataset` is bypassed; the one untrained
newline after each output's end-of-turn is left out, as it affects no loss) in our epoch-0 batch order
(sequential sampler), so both see the same batches. TRL's reference is the model with the adapter disabled
(peft model, ref_model=None). Runs, each its own process:

- tunehouse: the real engine; reference log-probs once before the first step (timed by wrapping the engine's
  `reference_logps`).
- trl: DPOTrainer defaults for a peft model: a no-grad reference forward inside every step.
- trl_precomputed: `precompute_ref_log_probs=True`: one reference pass before training, as ours.

pairs/s is over steps 2..N (step 1 is warm-up). "with reference" adds each run's one-off reference pass,
pro-rated to the timed pairs (TRL's default pays it inside the steps); "steps only" leaves it out. The
headline `ratio` is with the reference included for both (tunehouse vs TRL's default); `ratio_steps_only`
compares steps without reference against trl_precomputed. The loss of each is the DPO loss of its final adapter
over all training pairs, computed by the same code for both (tunehouse.training.objectives.evaluate, reference
= adapter disabled); the last step's logged loss is reported too. --data wikisql builds pairs from
../shared/datasets/wikisql_train.jsonl: preferred = the true SQL, non-preferred = the same SQL with the
selected column swapped for the next column of that table. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
BETA, LR, BATCH, R, ALPHA, SEED = 0.1, 1e-4, 8, 16, 32, 0


def wikisql_pair(chat: dict) -> dict | None:
    """A preference pair from one wikisql chat, or None when its SELECT column cannot be swapped."""
    user, answer = chat["messages"][0]["content"], chat["messages"][1]["content"]
    columns = re.search(r"^columns: (.*)$", user, re.M)
    select = re.match(r"SELECT (?:(?:COUNT|MAX|MIN|AVG|SUM) )?(.+?) FROM ", answer)
    if not columns or not select:
        return None
    names = [c.strip() for c in columns.group(1).split(", ")]
    if select.group(1) not in names or len(names) < 2:
        return None
    other = names[(names.index(select.group(1)) + 1) % len(names)]
    wrong = answer[: select.start(1)] + other + answer[select.end(1):]
    return {"input": {"messages": [chat["messages"][0]]}, "preferred_output": [chat["messages"][1]],
            "non_preferred_output": [{"role": "assistant", "content": wrong}]}


def pairs_file(args) -> Path:
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"{args.data}_pairs_{args.pairs}.jsonl"
    if args.data == "identity":
        lines = (ROOT / "tests" / "fixtures" / "identity_pairs_train.jsonl").read_text().splitlines(True)
    else:
        chats = (json.loads(x) for x in (SHARED / "wikisql_train.jsonl").read_text().splitlines())
        lines = [json.dumps(p) + "\n" for p in map(wikisql_pair, chats) if p]
    if len(lines) < args.pairs or args.pairs % BATCH:
        raise SystemExit(f"--pairs {args.pairs}: need a multiple of {BATCH} (same batches for both), at most "
                         f"{len(lines)} {args.data} pairs")
    path.write_text("".join(lines[: args.pairs]))
    return path


def encoded_pairs(path: Path, tok) -> list:
    from tunehouse.training.batches import encode_file

    return encode_file(path, lambda s: tok.encode(s, add_special_tokens=False), "gemma", 1024, method="dpo")


def final_loss(args, adapter_dir: Path, path: Path) -> float:
    """DPO loss of an adapter over all pairs of `path`, the reference being the same model with it disabled."""
    import torch
    from peft import PeftModel

    from tunehouse.base_models import load_model_dir, model_dir
    from tunehouse.config import Settings
    from tunehouse.training.objectives import DPOObjective, evaluate, reference_logps

    base_dir, family = model_dir(Settings(data_dir=args.data_dir), "gemma-3-270m")
    model, tok, _ = load_model_dir(base_dir, family, "cpu", torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    pairs = encoded_pairs(path, tok)
    lengths = [p.n_tokens for p in pairs]
    pad = tok.pad_token_id or 0
    reference_logps(model, pairs, lengths, pad, "cpu", use_adapter=False)
    return evaluate(DPOObjective(pad, BETA), model, pairs, list(range(len(pairs))), lengths, "cpu")["loss"]


def rate(times: list[float], sizes: list[int], ref_seconds: float, n_pairs: int) -> dict:
    """pairs/s over steps 2..N; `with_ref` adds the one-off reference pass pro-rated to the timed pairs."""
    span, pairs = times[-1] - times[0], sum(sizes[1:])
    ref = ref_seconds * pairs / n_pairs
    steps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    return {"steps_timed": len(times) - 1, "seconds": span, "pairs_timed": pairs, "pairs_s": pairs / span,
            "median_step_s": steps[len(steps) // 2], "load_avg_1m": os.getloadavg()[0],
            "pairs_s_with_ref": pairs / (span + ref), "ref_seconds": ref_seconds, "s_per_step": span / (len(times) - 1)}


def run_tunehouse(args) -> dict:
    from tunehouse.base_models import model_dir
    from tunehouse.config import Settings
    from tunehouse.training import engine, hparams
    from tunehouse.training.config import TrainingConfig

    path = pairs_file(args)
    times, losses, ref_seconds = [], [], []
    inner = engine.reference_logps

    def timed_reference(*a, **k):  # the engine's one-off reference pass, timed
        start = time.perf_counter()
        inner(*a, **k)
        ref_seconds.append(time.perf_counter() - start)

    engine.reference_logps = timed_reference

    class Callbacks:
        def on_event(self, level, message, data): pass
        def on_checkpoint(self, checkpoint): pass
        def control(self): return "continue"

        def on_metrics(self, m):
            times.append(time.perf_counter())
            losses.append(m["train_loss"])

    base_dir, family = model_dir(Settings(data_dir=args.data_dir), "gemma-3-270m")
    config = TrainingConfig(base_model="gemma-3-270m", base_model_dir=base_dir, chat_family=family, method="dpo",
                            beta=BETA, training_file=path, output_dir=args.work / "tunehouse", n_epochs=1,
                            batch_size=BATCH, seed=SEED, lora_r=R, lora_alpha=ALPHA, device="cpu",
                            learning_rate_multiplier=LR / hparams.BASE_LEARNING_RATE, save_every_seconds=1e9)
    result = engine.train(config, Callbacks())
    out = rate(times, [BATCH] * len(times), sum(ref_seconds), args.pairs)
    return {**out, "last_step_loss": losses[-1], "loss": final_loss(args, result.adapter_dir, path)}


def trl_dataset(pairs: list):
    """Our encoded pairs as TRL's tokenized columns, in our epoch-0 batch order."""
    from datasets import Dataset

    from tunehouse.data.render import IGNORE
    from tunehouse.training.batches import epoch_batches

    rows = []
    for i in (i for batch in epoch_batches([p.n_tokens for p in pairs], BATCH, SEED, 0) for i in batch):
        sides = []
        for side in (pairs[i].chosen, pairs[i].rejected):
            trained = [k for k, y in enumerate(side.labels) if y != IGNORE]
            start, end = trained[0], trained[-1] + 1
            assert trained == list(range(start, end)), "outputs are one contiguous trained span"
            sides.append((side.input_ids[:start], side.input_ids[start:end]))
        assert sides[0][0] == sides[1][0], "both sides share the prompt"
        rows.append({"prompt_ids": sides[0][0], "chosen_ids": sides[0][1], "rejected_ids": sides[1][1]})
    return Dataset.from_list(rows)


def run_trl(args, precompute: bool) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from tunehouse.base_models import ensure_gemma_cache, pick_device
    from tunehouse.config import Settings
    from tunehouse.training import hparams

    pick_device("cpu")  # same thread count as ours
    model_path = ensure_gemma_cache(Settings(data_dir=args.data_dir))
    tok = AutoTokenizer.from_pretrained(model_path)
    path = pairs_file(args)
    ds = trl_dataset(encoded_pairs(path, tok))
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    torch.manual_seed(SEED)
    model = get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM", bias="none"))
    total = -(-len(ds) // BATCH)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR,
                                  weight_decay=hparams.WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: hparams.lr_at(s, total, LR) / LR)
    name = "trl_precomputed" if precompute else "trl"
    cfg = DPOConfig(output_dir=str(args.work / name), per_device_train_batch_size=BATCH, num_train_epochs=1,
                    learning_rate=LR, beta=BETA, loss_type=["sigmoid"], seed=SEED, bf16=False,
                    gradient_checkpointing=False, use_cpu=True, report_to="none", logging_steps=1,
                    save_strategy="no", max_grad_norm=hparams.MAX_GRAD_NORM, weight_decay=hparams.WEIGHT_DECAY,
                    max_length=1024, dataloader_num_workers=0, train_sampling_strategy="sequential",
                    precompute_ref_log_probs=precompute, precompute_ref_batch_size=BATCH)
    times, losses, ref_seconds = [], [], []

    class Trainer(DPOTrainer):
        def _prepare_dataset(self, dataset, *a, **k):  # already tokenized, by us
            return dataset

        def _precompute_ref_logps(self, *a, **k):
            start = time.perf_counter()
            out = super()._precompute_ref_logps(*a, **k)
            ref_seconds.append(time.perf_counter() - start)
            return out

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    trainer = Trainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Timer()],
                      optimizers=(optimizer, schedule))
    trainer.train()
    adapter = args.work / name / "adapter"
    trainer.model.save_pretrained(str(adapter))
    out = rate(times, [BATCH] * len(times), sum(ref_seconds), len(ds))
    return {**out, "last_step_loss": losses[-1], "loss": final_loss(args, adapter, path)}


def child(kind: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TQDM_DISABLE="1")
    cmd = [sys.executable, __file__, "--run", kind, "--data", args.data, "--pairs", str(args.pairs),
           "--data-dir", str(args.data_dir), "--work", str(args.work)]
    print(f"== {kind}", flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{kind} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["identity", "wikisql"], default="identity")
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TUNEHOUSE_TEST_CACHE",
                                                                        ROOT / ".cache" / "test-data")))
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-dpo")
    p.add_argument("--run", choices=["tunehouse", "trl", "trl_precomputed"])
    args = p.parse_args()
    if args.run:
        out = {"tunehouse": run_tunehouse, "trl": lambda a: run_trl(a, False),
               "trl_precomputed": lambda a: run_trl(a, True)}[args.run](args)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return

    load_before = os.getloadavg()
    # TRL first: the likeliest to fail, so a broken setup shows early.
    runs = {k: child(k, args) for k in ("trl", "tunehouse", "trl_precomputed")}
    for kind, r in runs.items():
        print(f"{kind:16s} {r['pairs_s']:6.2f} pairs/s steps only  {r['pairs_s_with_ref']:6.2f} with reference  "
              f"{r['s_per_step']:6.1f} s/step (median {r['median_step_s']:5.1f})  load {r['load_avg_1m']:4.1f}  "
              f"ref pass {r['ref_seconds']:5.1f} s  last-step loss "
              f"{r['last_step_loss']:.4f}  final loss {r['loss']:.4f}  peak RSS {r['peak_rss_mb']:6.0f} MB")
    th, trl, pre = runs["tunehouse"], runs["trl"], runs["trl_precomputed"]
    summary = {
        "data": args.data, "pairs": args.pairs, "batch": BATCH, "beta": BETA, "lr": LR,
        "tunehouse_pairs_s": round(th["pairs_s_with_ref"], 3), "trl_pairs_s": round(trl["pairs_s_with_ref"], 3),
        "ratio": round(th["pairs_s_with_ref"] / trl["pairs_s_with_ref"], 2),
        "tunehouse_pairs_s_steps_only": round(th["pairs_s"], 3),
        "trl_precomputed_pairs_s_steps_only": round(pre["pairs_s"], 3),
        "ratio_steps_only": round(th["pairs_s"] / pre["pairs_s"], 2),
        "ref_seconds": {k: round(r["ref_seconds"], 1) for k, r in runs.items()},
        "median_step_s": {k: round(r["median_step_s"], 2) for k, r in runs.items()},
        "loss_tunehouse": round(th["loss"], 4), "loss_trl": round(trl["loss"], 4),
        "loss_trl_precomputed": round(pre["loss"], 4),
        "loss_rel_diff": round(abs(th["loss"] - trl["loss"]) / trl["loss"], 4),
        "last_step_loss": {k: round(r["last_step_loss"], 4) for k, r in runs.items()},
        "peak_rss_mb": {k: round(r["peak_rss_mb"]) for k, r in runs.items()},
        "load_avg_before": [round(x, 2) for x in load_before], "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "load_avg_1m_per_run": {k: round(r["load_avg_1m"], 2) for k, r in runs.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
