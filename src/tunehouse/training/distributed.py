"""Data-parallel helpers for the training loop when it runs as several processes under torchrun.

One process = one rank; each rank holds a full copy of the model and the LoRA weights. Per optimizer step every
rank trains its share of the batch, then one all_reduce sums the LoRA gradients and metric sums of all ranks,
so clipping and the AdamW step see exactly the 1-process gradient and every rank takes the same step. One rank,
the "main" one (the one holding the job, see launch.py), talks to the worker: callbacks, checkpoints, resume
state and the final adapter; what it decides (continue/pause/cancel) is broadcast to the others.

Without a process group (the ordinary 1-process run) every helper is a no-op: world_size() == 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from tunehouse.base_models import cpu_threads

_main_rank = 0  # set by elect_main(); rank 0 unless the job is held by a process elsewhere


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def is_main() -> bool:
    return rank() == _main_rank


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def init() -> None:
    """Join torchrun's process group: NCCL for CUDA tensors (this rank on cuda:LOCAL_RANK), gloo for CPU ones
    (the job config, control decisions, and everything when training on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def elect_main(holds_job: bool) -> int:
    """The rank that holds the job becomes the main rank. With c10d rendezvous global ranks are assigned by
    sorted host name, so the head node (the one with the worker) is not necessarily rank 0."""
    global _main_rank
    flags: list = [None] * world_size()
    dist.all_gather_object(flags, holds_job)
    holders = [r for r, f in enumerate(flags) if f]
    if len(holders) != 1:
        raise RuntimeError(f"exactly one training process must hold the job, found {len(holders)} (ranks {holders})")
    _main_rank = holders[0]
    return _main_rank


def local_device(device: torch.device) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK on CUDA; on CPU the same device with the cores shared between the
    local ranks (pick_device gave each one every core, which would oversubscribe the CPU N times)."""
    if world_size() == 1:
        return device
    if device.type == "cuda":
        return torch.device("cuda", local_rank())
    torch.set_num_threads(max(1, cpu_threads() // local_world_size()))
    return device


def broadcast_from_main(obj):
    """The main rank's `obj` on every rank (picklable objects: the job config, a control decision)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=_main_rank)
    return box[0]


def my_share(indices: list[int], lengths: list[int]) -> list[int]:
    """This rank's examples of one optimizer batch: sorted by length and dealt round-robin, so ranks get about
    the same number of tokens. A rank may get none (batch size < world size): it then contributes zeros."""
    n = world_size()
    if n == 1:
        return indices
    return sorted(indices, key=lambda i: lengths[i])[rank()::n]


def all_reduce_step(params: list[torch.Tensor], sums: dict[str, float]) -> dict[str, float]:
    """Sum the trainable gradients and the metric sums of all ranks in one all_reduce, in place for the grads.

    Gradients are float32 in the buffer (LoRA weights are float32 anyway; peft keeps adapters in float32 even
    on a bf16 base). A parameter without a gradient on this rank (no micro-batch this step) adds zeros.
    """
    device = params[0].device
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
    parts.append(torch.tensor(list(sums.values()), dtype=torch.float32, device=device))
    flat = torch.cat(parts)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n
    return dict(zip(sums, flat[offset:].tolist(), strict=True))


class Silent:
    """The callbacks of a rank other than the main one: report nothing; control() is the main rank's answer,
    broadcast by the loop, so what this says is never used."""

    def on_event(self, level, message, data) -> None:
        pass

    def on_metrics(self, metrics) -> None:
        pass

    def on_checkpoint(self, checkpoint) -> None:
        pass

    def control(self) -> str:
        return "continue"
