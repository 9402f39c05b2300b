"""On-disk layout of a job's output_dir: final adapter, epoch checkpoints, and the resumable training state.

    output_dir/adapter/                  final adapter (PEFT format) + training_config.json
    output_dir/checkpoints/step-N/       epoch-end checkpoints (the last keep_checkpoints are kept)
    output_dir/best/                     validation-driven auto: the adapter with the best validation loss so
                                         far (+ training_config.json with checkpoint_step, best_valid_loss)
    output_dir/resume.pt                 LoRA weights, optimizer, RNG, data position, metrics so far

Every write goes to a temporary name first and is renamed into place, so a SIGKILL at any moment leaves
either the previous or the new state, never a torn file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

RESUME_FILE = "resume.pt"
CONFIG_FILE = "training_config.json"
# DPO: the starting model's log-probs of every pair, computed once (engine._load_reference).
REFERENCE_FILE = "reference_logps.json"
BEST_DIR = "best"
_RESUME_VERSION = 1


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_resume(output_dir: Path, model, optimizer, progress: dict) -> None:
    state = {
        "version": _RESUME_VERSION,
        "trainable": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        **progress,
    }
    tmp = output_dir / (RESUME_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, output_dir / RESUME_FILE)


def load_resume(output_dir: Path, model, optimizer) -> dict | None:
    """Restore weights, optimizer and RNG from output_dir; returns the saved progress, or None if there is none."""
    path = output_dir / RESUME_FILE
    if not path.is_file():
        return None
    # On the CPU first: under torchrun rank k must not put rank 0's CUDA tensors on cuda:0.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("version") != _RESUME_VERSION:
        raise ValueError(f"{path} was written by an incompatible version of tunehouse")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.pop("trainable").items():
            if name not in params:
                raise ValueError(f"{path} does not match this model (unknown parameter {name})")
            params[name].copy_(value)
    optimizer.load_state_dict(state.pop("optimizer"))
    torch.set_rng_state(state.pop("torch_rng"))
    return state


def clear_resume(output_dir: Path) -> None:
    (output_dir / RESUME_FILE).unlink(missing_ok=True)


def save_adapter(model, target: Path, resolved_config: dict) -> Path:
    """PEFT adapter (adapter_config.json + adapter_model.safetensors) plus the resolved training config."""

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / CONFIG_FILE).write_text(json.dumps(resolved_config, indent=2, default=str), encoding="utf-8")

    return _write_dir_atomically(target, fill)


def _write_dir_atomically(target: Path, fill) -> Path:
    """`fill` a temp dir beside `target`, then rename it into place: readers see the old or the new, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        fill(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def copy_adapter(source: Path, target: Path) -> Path:
    """Copy an adapter directory into place the same atomic way as save_adapter (temp dir, then rename)."""
    if not (source / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{source} holds no adapter to copy")
    return _write_dir_atomically(target, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step}"


def prune_checkpoints(output_dir: Path, keep: int) -> list[int]:
    """Delete all but the newest `keep` checkpoints; returns the steps that were removed."""
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    steps = sorted(int(p.name.split("-", 1)[1]) for p in root.iterdir() if p.name.startswith("step-"))
    removed = steps[: max(0, len(steps) - max(keep, 1))]
    for step in removed:
        shutil.rmtree(checkpoint_dir(output_dir, step), ignore_errors=True)
    return removed
