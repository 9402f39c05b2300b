"""The LoRA training loop, SFT and DPO alike: train(config, callbacks) -> TrainingResult.

Steps: `_prepare` (load, encode, resolve "auto", wrap LoRA) -> `_restore` (resumable state or a fresh start)
-> `_run_epoch` / `_step` per epoch (full validation at each epoch end) -> `_end_epoch` (checkpoint) -> the
final adapter.

Validation-driven `auto` (SFT with `n_epochs: auto` and validation data: the job's file, or a held-out slice of
the training file when its auto epochs are 3 or more, tunehouse.data.holdout): the auto epochs are an upper
bound; a full validation pass runs every `eval_interval` steps too, the best adapter so far is kept in
output_dir/best/, training stops after hparams.PATIENCE evaluations without improvement, and the final adapter
is the best one. The best loss, its step
and the patience counter are part of Progress, so a resumed run stops where the uninterrupted one would.

One optimizer step = one batch of `batch_size` examples, split into padded micro-batches within a token budget
(gradient accumulation), loss = the objective's mean over the batch (objectives.py: cross-entropy per trained
token for SFT, the sigmoid DPO loss per pair), AdamW, linear warmup + cosine decay, gradient clipping. The
data order is a pure function of (seed, epoch), and the resumable state holds weights, optimizer, RNG and
(epoch, batch) position, so pause/resume and SIGKILL/resume reproduce the uninterrupted loss curve. Bad input
(a missing model directory, unreadable data) raises ValueError with a message meant for the user.

Under torchrun (launch.py) the same loop runs data-parallel: each rank trains its share of every batch, one
all_reduce per step sums the LoRA gradients (distributed.py), and only the main rank reports and writes files.
With one process none of that runs: distributed.world_size() is 1.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from tunehouse.base_models import load_model_dir, pick_device, train_dtype
from tunehouse.data import holdout
from tunehouse.training import distributed, hparams
from tunehouse.training.batches import encode_file, epoch_batches, micro_batches
from tunehouse.training.checkpoints import (
    BEST_DIR,
    CONFIG_FILE,
    REFERENCE_FILE,
    checkpoint_dir,
    clear_resume,
    copy_adapter,
    load_resume,
    prune_checkpoints,
    save_adapter,
    save_resume,
)
from tunehouse.training.config import Checkpoint, TrainingCallbacks, TrainingConfig, TrainingResult
from tunehouse.training.objectives import DPOObjective, Objective, SupervisedObjective, evaluate, reference_logps


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


@dataclass
class Progress:
    """Where a run stands; saved as-is in the resumable state, so a resumed run continues from exactly here."""

    step: int = 0
    epoch: int = 0  # epochs finished
    batch: int = 0  # batches of the current epoch done
    trained_tokens: int = 0
    metrics: list[dict] = field(default_factory=list)  # one row per step
    valid_cursor: int = 0  # where the next partial validation starts in the validation set
    last_valid: dict = field(default_factory=dict)
    hyperparameters: dict = field(default_factory=dict)
    # Validation-driven auto: the best full validation loss so far, its step, evaluations since the last
    # improvement of at least hparams.MIN_RELATIVE_IMPROVEMENT, and whether training stopped early.
    best_valid_loss: float | None = None
    best_step: int = 0
    evals_without_improvement: int = 0
    stopped_early: bool = False


@dataclass
class Run:
    """What stays fixed for a whole run: model, optimizer, encoded data and the resolved schedule."""

    config: TrainingConfig
    callbacks: TrainingCallbacks
    model: Any
    optimizer: torch.optim.Optimizer
    params: list
    device: torch.device
    pad_id: int
    train_set: list
    valid_set: list
    objective: Objective
    lengths: list[int]  # tokens per training example (batching, token counts)
    valid_lengths: list[int]
    hp: dict
    total_steps: int
    steps_per_epoch: int
    eval_every: int
    peak_lr: float
    resolved: dict
    eval_interval: int = 0  # validation-driven auto: steps between full validations; 0 = off
    held_out: int = 0  # training examples held out as the validation set (no validation file)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.output_dir)


def train(config: TrainingConfig, callbacks: TrainingCallbacks) -> TrainingResult:
    """Train to the end (or a pause/cancel). Under torchrun (distributed.py) only the main rank reports to
    `callbacks` and writes files; every rank returns the same result."""
    callbacks = callbacks if distributed.is_main() else distributed.Silent()
    run = _prepare(config, callbacks)
    progress = _restore(run)
    for epoch in range(progress.epoch, run.hp["n_epochs"]):
        if progress.stopped_early:
            break
        stopped = _run_epoch(run, progress, epoch)
        if stopped:
            return TrainingResult(stopped, None, progress.trained_tokens, run.hp, progress.metrics)
        if progress.batch < run.steps_per_epoch:
            break  # stopped early within the epoch: no epoch-end checkpoint
        _end_epoch(run, progress)
        progress.epoch, progress.batch = epoch + 1, 0
        _save_state(run, progress)
    adapter = _final_adapter(run, progress)
    callbacks.on_event("info", "Training finished", {"trained_tokens": progress.trained_tokens})
    best = run.eval_interval and progress.best_step
    return TrainingResult("succeeded", adapter, progress.trained_tokens, run.hp, progress.metrics,
                          best_step=progress.best_step if best else None,
                          best_valid_loss=progress.best_valid_loss if best else None,
                          stopped_early=progress.stopped_early)


def _final_adapter(run: Run, progress: Progress) -> Path:
    """output_dir/adapter: the best checkpoint (validation-driven auto), else the weights as trained."""
    adapter = run.out_dir / "adapter"
    best = run.eval_interval and progress.best_step
    if distributed.is_main():
        if best:
            _check_best(run.out_dir / BEST_DIR, progress.best_step)
            # A copy, not a rename: a SIGKILL before clear_resume resumes into this same step, which needs best/.
            copy_adapter(run.out_dir / BEST_DIR, adapter)
        else:
            save_adapter(run.model, adapter, run.resolved)
        clear_resume(run.out_dir)
        shutil.rmtree(run.out_dir / BEST_DIR, ignore_errors=True)
    if best:
        run.callbacks.on_event(
            "info", f"Fine-tuned model = checkpoint of step {progress.best_step} (best validation loss "
            f"{progress.best_valid_loss:.4f})",
            {"best_step": progress.best_step, "best_valid_loss": progress.best_valid_loss,
             "stopped_early": progress.stopped_early, "step": progress.step})
    return adapter


def _check_best(best_dir: Path, step: int) -> None:
    """best/ must hold the step Progress names. A resumed run re-saves every best it passes again, so they only
    differ if the resumed run diverged from the interrupted one; then the job fails rather than ship another step."""
    try:
        saved = json.loads((best_dir / CONFIG_FILE).read_text(encoding="utf-8")).get("checkpoint_step")
    except (OSError, ValueError) as e:
        raise RuntimeError(f"the best checkpoint (step {step}) is not readable in {best_dir}: {e}") from e
    if saved != step:
        raise RuntimeError(f"{best_dir} holds step {saved}, but the best validation loss was at step {step}")


def _prepare(config: TrainingConfig, callbacks: TrainingCallbacks) -> Run:
    """Load the base, encode the data, resolve "auto", wrap LoRA, build the optimizer; write the resolved config."""
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device, dtype = pick_device(config.device)
    device = distributed.local_device(device)
    dtype = train_dtype(config.precision, device, dtype)
    model, tokenizer, family = load_model_dir(Path(config.base_model_dir), config.chat_family, device, dtype)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    def warn(message: str, data: dict) -> None:
        callbacks.on_event("warn", message, data)

    def read(path: Path) -> list:
        return encode_file(path, encode, family, config.max_length, warn, config.method)

    train_set = read(Path(config.training_file))
    valid_set = read(Path(config.validation_file)) if config.validation_file else []
    plan = holdout.validation_plan(len(train_set), config.n_epochs == "auto", bool(valid_set), config.method)
    if plan["holdout_examples"]:
        picked = set(holdout.holdout_indices(len(train_set), config.seed))
        valid_set = [e for i, e in enumerate(train_set) if i in picked]
        train_set = [e for i, e in enumerate(train_set) if i not in picked]
    hp = hparams.resolve_hyperparameters(len(train_set), config.n_epochs, config.batch_size,
                                         config.learning_rate_multiplier, config.method, config.beta)
    steps_per_epoch = math.ceil(len(train_set) / hp["batch_size"])
    total_steps = hp["n_epochs"] * steps_per_epoch
    model = _wrap_lora(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    peak_lr = hparams.BASE_LEARNING_RATE * hp["learning_rate_multiplier"]
    optimizer = torch.optim.AdamW(params, lr=peak_lr, weight_decay=hparams.WEIGHT_DECAY)
    resolved = _resolved(config, hp, total_steps, model.peft_config["default"], family)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths, valid_lengths = [e.n_tokens for e in train_set], [e.n_tokens for e in valid_set]
    objective: Objective = SupervisedObjective(pad_id)
    if config.method == "dpo":
        objective = DPOObjective(pad_id, hp["beta"])
        _load_reference(model, config, train_set, lengths, valid_set, valid_lengths, pad_id, device)
    interval = hparams.eval_interval(steps_per_epoch, len(train_set), len(valid_set)) \
        if plan["early_stopping"] else 0
    resolved.update(eval_interval=interval, patience=hparams.PATIENCE if interval else None,
                    validation_holdout=plan["holdout_examples"], base_dtype=str(dtype).removeprefix("torch."))
    if distributed.is_main():
        (out_dir / CONFIG_FILE).write_text(json.dumps(resolved, indent=2), encoding="utf-8")
    return Run(config, callbacks, model, optimizer, params, device, pad_id, train_set, valid_set, objective,
               lengths, valid_lengths, hp, total_steps, steps_per_epoch,
               config.eval_every or max(1, total_steps // 20), peak_lr, resolved, interval,
               plan["holdout_examples"])


def _load_reference(model, config: TrainingConfig, train_set, lengths, valid_set, valid_lengths, pad_id,
                    device) -> None:
    """DPO reference log-probs of every pair, from the starting weights (this runs before _restore loads any
    trained state). Kept in the job directory so a resumed run does not pay for them again."""
    path = Path(config.output_dir) / REFERENCE_FILE
    pairs = train_set + valid_set
    key = hashlib.sha256(json.dumps([[p.chosen.input_ids, p.rejected.input_ids] for p in pairs]).encode()).hexdigest()
    try:
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        saved = {}  # unreadable (say, cut by a SIGKILL): recomputing gives the same values
    if saved.get("key") == key and len(saved.get("logps", [])) == len(pairs):
        for p, (c, r) in zip(pairs, saved["logps"], strict=True):
            p.ref_chosen, p.ref_rejected = c, r
        return
    use_adapter = config.init_adapter is not None
    reference_logps(model, train_set, lengths, pad_id, device, use_adapter)
    if valid_set:
        reference_logps(model, valid_set, valid_lengths, pad_id, device, use_adapter)
    if not distributed.is_main():
        return  # every rank computed the same values; the main rank keeps them
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "logps": [[p.ref_chosen, p.ref_rejected] for p in pairs]}),
                   encoding="utf-8")
    tmp.replace(path)


def _restore(run: Run) -> Progress:
    """The saved progress of an interrupted run (weights and optimizer restored too), or a fresh start."""
    saved = load_resume(run.out_dir, run.model, run.optimizer)
    if saved is None:
        bs = run.hp["batch_size"]
        what = f"{len(run.train_set)} preference pairs (DPO, beta {run.hp['beta']})" if "beta" in run.hp \
            else f"{len(run.train_set)} examples"
        run.callbacks.on_event(
            "info", f"Training {what}: {run.hp['n_epochs']} epochs x {run.steps_per_epoch} "
            f"steps, batch size {bs}, learning rate {run.peak_lr:.2e}, base weights in {run.resolved['base_dtype']}",
            dict(run.hp, total_steps=run.total_steps, base_dtype=run.resolved["base_dtype"]))
        _announce_validation(run)
        return Progress(hyperparameters=run.hp)
    if saved.get("hyperparameters") != run.hp:
        raise ValueError(f"Resumable state in {run.out_dir} was made with other hyperparameters "
                         f"({saved.get('hyperparameters')}); refusing to mix runs")
    progress = Progress(**{f.name: saved[f.name] for f in fields(Progress) if f.name in saved})
    run.callbacks.on_event("info", f"Resuming from step {progress.step}/{run.total_steps}", {"step": progress.step})
    return progress


def _announce_validation(run: Run) -> None:
    """The events that say a fresh run is validation-driven, and on which examples."""
    if not run.eval_interval:
        return
    if distributed.is_main():
        shutil.rmtree(run.out_dir / BEST_DIR, ignore_errors=True)  # a stale best/ of an abandoned attempt
    n_valid = len(run.valid_set)
    if run.held_out:
        run.callbacks.on_event(
            "info", f"No validation file: holding out {n_valid} of {n_valid + len(run.train_set)} training "
            f"examples (chosen by seed {run.config.seed}) to measure validation loss", {"held_out": n_valid})
    run.callbacks.on_event(
        "info", f"n_epochs auto: at most {run.hp['n_epochs']} epochs; validation loss on {n_valid} examples every "
        f"{run.eval_interval} steps and at each epoch end, stopping early after {hparams.PATIENCE} evaluations "
        f"without a {hparams.MIN_RELATIVE_IMPROVEMENT:.0%} improvement; the fine-tuned model is the checkpoint "
        "with the best validation loss",
        {"eval_interval": run.eval_interval, "patience": hparams.PATIENCE, "max_epochs": run.hp["n_epochs"],
         "min_relative_improvement": hparams.MIN_RELATIVE_IMPROVEMENT, "validation_examples": n_valid})


def _save_state(run: Run, progress: Progress) -> None:
    if distributed.is_main():
        save_resume(run.out_dir, run.model, run.optimizer, asdict(progress))


def _run_epoch(run: Run, progress: Progress, epoch: int) -> str | None:
    """Train the rest of `epoch`; returns "cancelled" / "paused" when the callbacks asked to stop, else None."""
    batches = epoch_batches(run.lengths, run.hp["batch_size"], run.config.seed, epoch)
    last_save = time.monotonic()
    while progress.batch < len(batches):
        # Under torchrun the main rank asks and every rank acts on its answer, so all stop at the same step.
        action = distributed.broadcast_from_main(run.callbacks.control())
        if action == "cancel":
            return "cancelled"
        if action == "pause":
            _save_state(run, progress)
            run.callbacks.on_event("info", f"Paused at step {progress.step}/{run.total_steps}", {})
            return "paused"
        _step(run, progress, batches[progress.batch], epoch)
        if progress.stopped_early:
            return None
        # The epoch end saves anyway; in between, save often enough that a SIGKILL loses little.
        if progress.batch < len(batches) and time.monotonic() - last_save >= run.config.save_every_seconds:
            _save_state(run, progress)
            last_save = time.monotonic()
    return None


def _step(run: Run, progress: Progress, batch: list[int], epoch: int) -> None:
    """One optimizer step on `batch`, then (every eval_every steps) validation on a rotating slice, and a full
    validation at the epoch end (and every eval_interval steps when validation-driven)."""
    lr = hparams.lr_at(progress.step, run.total_steps, run.peak_lr)
    row = _train_step(run, batch, lr)
    progress.step += 1
    progress.batch += 1
    progress.trained_tokens += sum(run.lengths[i] for i in batch)
    step = progress.step
    row = {"step": step, "total_steps": run.total_steps, "epoch": epoch + 1, **row}
    if run.valid_set and (step % run.eval_every == 0 or step == run.total_steps):
        start, size = progress.valid_cursor, len(run.valid_set)
        pick = [(start + k) % size for k in range(min(run.hp["batch_size"], size))]
        progress.valid_cursor = (start + len(pick)) % size
        valid = evaluate(run.objective, run.model, run.valid_set, pick, run.valid_lengths, run.device)
        progress.last_valid = {f"valid_{k}": v for k, v in valid.items()}
        row.update(progress.last_valid)
    full = _full_validation(run) if _full_validation_due(run, progress) else {}
    row.update(full)
    progress.metrics.append(row)
    run.callbacks.on_metrics(row)
    if full and run.eval_interval:
        _track_best(run, progress, full["full_valid_loss"])


def _full_validation_due(run: Run, progress: Progress) -> bool:
    if not run.valid_set:
        return False
    if progress.batch == run.steps_per_epoch:
        return True
    return bool(run.eval_interval) and progress.batch % run.eval_interval == 0


def _full_validation(run: Run) -> dict:
    every = list(range(len(run.valid_set)))
    full = evaluate(run.objective, run.model, run.valid_set, every, run.valid_lengths, run.device)
    return {f"full_valid_{k}": v for k, v in full.items()}


def _track_best(run: Run, progress: Progress, loss: float) -> None:
    """Keep the best adapter, count evaluations without improvement, and decide whether to stop early."""
    # The main rank's value on every rank: the stop decision must be the same everywhere, even where devices
    # round differently.
    loss = distributed.broadcast_from_main(loss)
    step = progress.step
    significant = hparams.improved(loss, progress.best_valid_loss)
    progress.evals_without_improvement = 0 if significant else progress.evals_without_improvement + 1
    if progress.best_valid_loss is None or loss < progress.best_valid_loss:
        progress.best_valid_loss, progress.best_step = loss, step
        if distributed.is_main():
            save_adapter(run.model, run.out_dir / BEST_DIR, dict(run.resolved, checkpoint_step=step,
                                                                 best_valid_loss=loss))
        if significant:  # improvements under the threshold update best/ quietly: fewer events
            run.callbacks.on_event("info", f"New best validation loss {loss:.4f} at step {step}",
                                   {"step": step, "best_step": step, "best_valid_loss": loss})
    if progress.evals_without_improvement >= hparams.PATIENCE:
        progress.stopped_early = True
        run.callbacks.on_event(
            "info", f"Stopping early at step {step}: validation loss has not improved for "
            f"{progress.evals_without_improvement} evaluations (best {progress.best_valid_loss:.4f} at step "
            f"{progress.best_step})",
            {"step": step, "best_step": progress.best_step, "best_valid_loss": progress.best_valid_loss,
             "evaluations_without_improvement": progress.evals_without_improvement})


def _train_step(run: Run, batch: list[int], lr: float) -> dict:
    items = [run.train_set[i] for i in batch]
    denominator = run.objective.denominator(items)
    sums = dict.fromkeys(run.objective.metric_names, 0.0)
    # Under torchrun each rank trains its share of the batch, still divided by the whole batch's denominator:
    # the all_reduce sum of the ranks' gradients is then exactly the 1-process gradient.
    for mb in micro_batches(distributed.my_share(batch, run.lengths), run.lengths):
        loss_sum, stats = run.objective.loss(run.model, [run.train_set[i] for i in mb], run.device)
        (loss_sum / denominator).backward()  # sum over micro-batches = the exact mean over the whole batch
        sums = {k: sums[k] + stats[k] for k in sums}
    if distributed.world_size() > 1:
        sums = distributed.all_reduce_step(run.params, sums)
    torch.nn.utils.clip_grad_norm_(run.params, hparams.MAX_GRAD_NORM)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {**{f"train_{k}": v / denominator for k, v in sums.items()}, "learning_rate": lr,
            "step_tokens": sum(e.n_tokens for e in items), "step_trained_tokens": sum(e.n_trained for e in items)}


def _end_epoch(run: Run, progress: Progress) -> None:
    """An epoch-end checkpoint (PEFT adapter) with the epoch's last metrics (its full validation included, done
    by _step), and pruning to the last keep_checkpoints."""
    step = progress.step
    last = progress.metrics[-1] if progress.metrics else {}
    metrics = {"step": step}
    for name in run.objective.metric_names:
        if f"train_{name}" in last:
            metrics[f"train_{name}"] = last[f"train_{name}"]
    metrics.update(progress.last_valid)
    metrics.update({k: v for k, v in last.items() if k.startswith("full_valid_")})
    if not distributed.is_main():
        return
    path = save_adapter(run.model, checkpoint_dir(run.out_dir, step), dict(run.resolved, checkpoint_step=step))
    run.callbacks.on_checkpoint(Checkpoint(step=step, adapter_dir=path, metrics=metrics))
    prune_checkpoints(run.out_dir, run.config.keep_checkpoints)
