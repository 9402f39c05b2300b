"""TrainingConfig: what a job asks for (hyperparameters may be "auto") and the callbacks the loop reports to.

This is the contract between the worker (which owns the store and the settings) and the engine (which owns
torch): the worker builds a TrainingConfig from a job row, with the base model already resolved to a local
directory, and passes callbacks that write events/checkpoints to the store. The engine never imports the
store, the API or the settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

Auto = Literal["auto"]
Control = Literal["continue", "cancel", "pause"]


@dataclass
class TrainingConfig:
    base_model: str  # catalog name (aliases already resolved), kept in the adapter's training_config.json
    base_model_dir: Path  # its Hugging Face directory (base_models.model_dir), what the engine loads
    training_file: Path
    output_dir: Path  # the job's own directory; the engine writes adapters, checkpoints and resume state here
    # Chat format when the tokenizer has no template of its own: "gemma" | "chatml" (catalog entry's family).
    chat_family: str = "gemma"
    validation_file: Path | None = None
    n_epochs: int | Auto = "auto"
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = "auto"
    # "dpo": the files are preference pairs and the loss is DPO's (training/objectives.py); beta is its strength.
    method: Literal["supervised", "dpo"] = "supervised"
    beta: float | Auto = "auto"
    seed: int = 0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    max_length: int = 1024
    keep_checkpoints: int = 3
    eval_every: int | None = None  # partial validation (a batch-sized slice) every N steps; None = auto
    init_adapter: Path | None = None  # continue training from an existing fine-tuned model's adapter
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # the frozen base's dtype (base_models.train_dtype)
    # Resumable state is saved at least this often (and at each epoch end, and on pause) for SIGKILL recovery.
    save_every_seconds: float = 120.0


@dataclass
class Checkpoint:
    step: int
    adapter_dir: Path  # PEFT format: adapter_config.json + adapter_model.safetensors
    # step, train_loss, train_mean_token_accuracy (DPO: train_rewards_accuracy, ...), valid_*, full_valid_*
    metrics: dict


@dataclass
class TrainingResult:
    status: Literal["succeeded", "cancelled", "paused"]
    adapter_dir: Path | None  # final adapter (succeeded) or None
    trained_tokens: int
    hyperparameters: dict  # resolved: n_epochs, batch_size, learning_rate_multiplier (+ beta for DPO), never "auto"
    metrics: list[dict] = field(default_factory=list)  # one row per step, for the results CSV
    # Validation-driven auto (n_epochs "auto" with validation data): the step whose adapter is the result, its
    # full validation loss, and whether training stopped before the epoch cap. None/False otherwise.
    best_step: int | None = None
    best_valid_loss: float | None = None
    stopped_early: bool = False


class TrainingCallbacks(Protocol):
    def on_event(self, level: Literal["info", "warn", "error"], message: str, data: dict) -> None: ...

    def on_metrics(self, metrics: dict) -> None:
        """Per step: step, total_steps, train_loss and the objective's other train_* metrics (SFT:
        train_mean_token_accuracy; DPO: train_rewards_accuracy, train_rewards_margin, train_chosen_logps,
        train_rejected_logps), learning_rate, step_tokens, and valid_* when measured."""

    def on_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    def control(self) -> Control:
        """Polled once per optimizer step: the worker answers what the user asked for."""
