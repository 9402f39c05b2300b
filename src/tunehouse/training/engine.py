"""The LoRA SFT loop: train(config, callbacks) -> TrainingResult.

One optimizer step = one batch of `batch_size` examples, split into padded micro-batches within a token budget
(gradient accumulation), loss = mean cross-entropy over the batch's trained tokens (selective head), AdamW,
linear warmup + cosine decay, gradient clipping. The data order is a pure function of (seed, epoch), and the
resumable state holds weights, optimizer, RNG and (epoch, batch) position, so pause/resume and SIGKILL/resume
reproduce the uninterrupted loss curve. Bad input (unknown model, unreadable data) raises ValueError or
catalog.UnknownModelError with a message meant for the user.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from tunehouse.training import hparams
from tunehouse.training.batches import collate, encode_file, epoch_batches, micro_batches
from tunehouse.training.config import Checkpoint, TrainingCallbacks, TrainingConfig, TrainingResult
from tunehouse.training.loss import selective_loss
from tunehouse.training.state import (
    CONFIG_FILE,
    checkpoint_dir,
    clear_resume,
    load_resume,
    prune_checkpoints,
    save_adapter,
    save_resume,
)


def _settings(config: TrainingConfig):
    from tunehouse.config import Settings

    return Settings(data_dir=config.data_dir) if config.data_dir else Settings()


def _wrap_lora(model, config: TrainingConfig):
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(config.seed)  # LoRA A matrices are random: the seed makes them reproducible
    if config.init_adapter:
        path = Path(config.init_adapter)
        if not (path / "adapter_config.json").is_file():
            raise ValueError(f"init_adapter {path} is not a PEFT adapter directory")
    with warnings.catch_warnings():
        # peft reads transformers' deprecated `is_gradient_checkpointing`: a FutureWarning in every job's log
        # that the user can do nothing about.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        if config.init_adapter:
            return PeftModel.from_pretrained(model, str(path), is_trainable=True)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=config.target_modules, task_type="CAUSAL_LM", bias="none")
        return get_peft_model(model, lora)


@torch.no_grad()
def evaluate(model, examples, indices, lengths, pad_id, device) -> tuple[float, float]:
    """(mean loss, mean token accuracy) over the trained tokens of the given examples."""
    model.eval()
    loss = correct = count = 0
    for mb in micro_batches(indices, lengths):
        ids, mask, labels = (t.to(device) for t in collate([examples[i] for i in mb], pad_id))
        s, c, n = selective_loss(model, ids, mask, labels)
        loss, correct, count = loss + float(s), correct + c, count + n
    model.train()
    return loss / max(count, 1), correct / max(count, 1)


def _resolved(config: TrainingConfig, hp: dict, total_steps: int, lora_cfg, family) -> dict:
    out = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    out.update(hp, total_steps=total_steps, base_learning_rate=hparams.BASE_LEARNING_RATE,
               learning_rate=hp["learning_rate_multiplier"] * hparams.BASE_LEARNING_RATE,
               warmup_fraction=hparams.WARMUP_FRACTION, max_grad_norm=hparams.MAX_GRAD_NORM,
               lora_r=lora_cfg.r, lora_alpha=lora_cfg.lora_alpha,
               target_modules=sorted(lora_cfg.target_modules) if isinstance(lora_cfg.target_modules, set)
               else lora_cfg.target_modules,
               chat_family=family if isinstance(family, str) else "tokenizer-template")
    return out


def train(config: TrainingConfig, callbacks: TrainingCallbacks) -> TrainingResult:
    from tunehouse.training.base_models import load_base_model, pick_device

    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device, dtype = pick_device(config.device)
    model, tokenizer, family = load_base_model(_settings(config), config.base_model, device, dtype)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    def warn(message: str, data: dict) -> None:
        callbacks.on_event("warn", message, data)

    train_set = encode_file(Path(config.training_file), encode, family, config.max_length, warn)
    valid_set = (encode_file(Path(config.validation_file), encode, family, config.max_length, warn)
                 if config.validation_file else [])
    hp = hparams.resolve_hyperparameters(len(train_set), config.n_epochs, config.batch_size,
                                         config.learning_rate_multiplier)
    bs, n_epochs = hp["batch_size"], hp["n_epochs"]
    steps_per_epoch = math.ceil(len(train_set) / bs)
    total_steps = n_epochs * steps_per_epoch
    eval_every = config.eval_every or max(1, total_steps // 20)
    peak_lr = hparams.BASE_LEARNING_RATE * hp["learning_rate_multiplier"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = [len(e.input_ids) for e in train_set]
    vlengths = [len(e.input_ids) for e in valid_set]

    model = _wrap_lora(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=peak_lr, weight_decay=hparams.WEIGHT_DECAY)
    resolved = _resolved(config, hp, total_steps, model.peft_config["default"], family)
    (out_dir / CONFIG_FILE).write_text(json.dumps(resolved, indent=2), encoding="utf-8")

    progress = {"step": 0, "epoch": 0, "batch": 0, "trained_tokens": 0, "metrics": [], "valid_cursor": 0,
                "last_valid": {}, "hyperparameters": hp}
    saved = load_resume(out_dir, model, optimizer)
    if saved is not None:
        if saved.get("hyperparameters") != hp:
            raise ValueError(f"Resumable state in {out_dir} was made with other hyperparameters "
                             f"({saved.get('hyperparameters')}); refusing to mix runs")
        progress.update(saved)
        callbacks.on_event("info", f"Resuming from step {progress['step']}/{total_steps}", {"step": progress["step"]})
    else:
        callbacks.on_event("info", f"Training {len(train_set)} examples: {n_epochs} epochs x {steps_per_epoch} "
                           f"steps, batch size {bs}, learning rate {peak_lr:.2e}", dict(hp, total_steps=total_steps))

    def save_state() -> None:
        save_resume(out_dir, model, optimizer, progress)

    last_save = time.monotonic()
    for epoch in range(progress["epoch"], n_epochs):
        batches = epoch_batches(lengths, bs, config.seed, epoch)
        while progress["batch"] < len(batches):
            action = callbacks.control()
            if action == "cancel":
                return TrainingResult("cancelled", None, progress["trained_tokens"], hp, progress["metrics"])
            if action == "pause":
                save_state()
                callbacks.on_event("info", f"Paused at step {progress['step']}/{total_steps}", {})
                return TrainingResult("paused", None, progress["trained_tokens"], hp, progress["metrics"])
            batch = batches[progress["batch"]]
            row = _train_step(model, optimizer, params, train_set, batch, lengths, pad_id, device,
                              hparams.lr_at(progress["step"], total_steps, peak_lr))
            progress["step"] += 1
            progress["batch"] += 1
            progress["trained_tokens"] += sum(lengths[i] for i in batch)
            step = progress["step"]
            row = {"step": step, "total_steps": total_steps, "epoch": epoch + 1, **row}
            if valid_set and (step % eval_every == 0 or step == total_steps):
                start = progress["valid_cursor"]
                pick = [(start + k) % len(valid_set) for k in range(min(bs, len(valid_set)))]
                progress["valid_cursor"] = (start + len(pick)) % len(valid_set)
                vl, va = evaluate(model, valid_set, pick, vlengths, pad_id, device)
                row.update(valid_loss=vl, valid_mean_token_accuracy=va)
                progress["last_valid"] = {"valid_loss": vl, "valid_mean_token_accuracy": va}
            progress["metrics"].append(row)
            callbacks.on_metrics(row)
            if progress["batch"] == len(batches):
                break  # the epoch end saves below
            if time.monotonic() - last_save >= config.save_every_seconds:
                save_state()
                last_save = time.monotonic()
        _end_epoch(model, config, callbacks, progress, valid_set, vlengths, pad_id, device, resolved)
        progress["epoch"], progress["batch"] = epoch + 1, 0
        save_state()
        last_save = time.monotonic()

    adapter = save_adapter(model, out_dir / "adapter", resolved)
    clear_resume(out_dir)
    callbacks.on_event("info", "Training finished", {"trained_tokens": progress["trained_tokens"]})
    return TrainingResult("succeeded", adapter, progress["trained_tokens"], hp, progress["metrics"])


def _train_step(model, optimizer, params, examples, batch, lengths, pad_id, device, lr) -> dict:
    n_trained = sum(examples[i].n_trained for i in batch)
    loss_total = correct_total = 0.0
    for mb in micro_batches(batch, lengths):
        ids, mask, labels = (t.to(device) for t in collate([examples[i] for i in mb], pad_id))
        loss_sum, correct, _ = selective_loss(model, ids, mask, labels)
        (loss_sum / n_trained).backward()  # sum over micro-batches = the exact mean over the whole batch
        loss_total += float(loss_sum.detach())
        correct_total += correct
    torch.nn.utils.clip_grad_norm_(params, hparams.MAX_GRAD_NORM)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"train_loss": loss_total / n_trained, "train_mean_token_accuracy": correct_total / n_trained,
            "learning_rate": lr, "step_tokens": sum(lengths[i] for i in batch), "step_trained_tokens": n_trained}


def _end_epoch(model, config, callbacks, progress, valid_set, vlengths, pad_id, device, resolved) -> None:
    """Full validation, an epoch-end checkpoint (PEFT adapter), and pruning to the last keep_checkpoints."""
    step = progress["step"]
    last = progress["metrics"][-1] if progress["metrics"] else {}
    metrics = {"step": step}
    for key in ("train_loss", "train_mean_token_accuracy"):
        if key in last:
            metrics[key] = last[key]
    metrics.update(progress["last_valid"])
    if valid_set:
        fl, fa = evaluate(model, valid_set, list(range(len(valid_set))), vlengths, pad_id, device)
        metrics.update(full_valid_loss=fl, full_valid_mean_token_accuracy=fa)
        if progress["metrics"]:
            progress["metrics"][-1].update(full_valid_loss=fl, full_valid_mean_token_accuracy=fa)
    out_dir = Path(config.output_dir)
    path = save_adapter(model, checkpoint_dir(out_dir, step), dict(resolved, checkpoint_step=step))
    callbacks.on_checkpoint(Checkpoint(step=step, adapter_dir=path, metrics=metrics))
    prune_checkpoints(out_dir, config.keep_checkpoints)
