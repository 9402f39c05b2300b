"""What the one training loop minimises: supervised cross-entropy (SFT) or the sigmoid DPO loss.

An objective turns a micro-batch of encoded items into (loss sum, metric sums) and says what the sums are
divided by for the whole optimizer batch (trained tokens for SFT, pairs for DPO). The loop in engine.py does
the rest the same way for both: accumulation, clipping, AdamW, schedule, validation, checkpoints, resume.

DPO (Rafailov et al. 2023): with policy log-probs pi and reference log-probs ref summed over each output's
trained tokens (assistant content + end-of-turn, the SFT masks), reward = beta * (pi - ref), and
loss = -log sigmoid(reward_chosen - reward_rejected). The reference is the starting model; its log-probs are
computed once per pair before the first step (reference_logps) and reused every epoch, so neither a second
copy of the weights nor a second forward pass per step is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tunehouse.training.batches import Pair, collate, micro_batches
from tunehouse.training.loss import selective_loss, sequence_logps


@dataclass
class SupervisedObjective:
    pad_id: int
    metric_names: tuple[str, ...] = ("loss", "mean_token_accuracy")

    def denominator(self, items: list) -> int:
        return sum(e.n_trained for e in items)

    def loss(self, model, items: list, device) -> tuple[torch.Tensor, dict[str, float]]:
        ids, mask, labels = (t.to(device) for t in collate(items, self.pad_id))
        loss_sum, correct, _ = selective_loss(model, ids, mask, labels)
        return loss_sum, {"loss": float(loss_sum.detach()), "mean_token_accuracy": float(correct)}


@dataclass
class DPOObjective:
    pad_id: int
    beta: float
    metric_names: tuple[str, ...] = ("loss", "rewards_accuracy", "rewards_margin", "chosen_logps", "rejected_logps")

    def denominator(self, items: list) -> int:
        return len(items)

    def loss(self, model, items: list[Pair], device) -> tuple[torch.Tensor, dict[str, float]]:
        n = len(items)
        # Chosen and rejected sides go through one forward pass (one padded batch of 2n rows).
        ids, mask, labels = (t.to(device) for t in collate([p.chosen for p in items] + [p.rejected for p in items],
                                                           self.pad_id))
        logps = sequence_logps(model, ids, mask, labels)
        chosen, rejected = logps[:n], logps[n:]
        ref = torch.tensor([[p.ref_chosen, p.ref_rejected] for p in items], dtype=logps.dtype, device=logps.device)
        reward_c, reward_r = self.beta * (chosen - ref[:, 0]), self.beta * (rejected - ref[:, 1])
        losses = -F.logsigmoid(reward_c - reward_r)
        margin = (reward_c - reward_r).detach()
        return losses.sum(), {"loss": float(losses.detach().sum()), "rewards_accuracy": float((margin > 0).sum()),
                              "rewards_margin": float(margin.sum()), "chosen_logps": float(chosen.detach().sum()),
                              "rejected_logps": float(rejected.detach().sum())}


Objective = SupervisedObjective | DPOObjective


@torch.no_grad()
def reference_logps(model, pairs: list[Pair], lengths: list[int], pad_id: int, device, use_adapter: bool) -> None:
    """Fill each pair's ref_chosen/ref_rejected with the starting model's summed log-probs.

    A fresh LoRA adapter starts as the identity, so the reference is the base with the adapter disabled; a job
    that starts from an ft: model's adapter (use_adapter) takes that adapter, untrained yet, as its reference.
    """
    was_training = model.training
    model.eval()
    for mb in micro_batches(list(range(len(pairs))), lengths):
        items = [pairs[i] for i in mb]
        ids, mask, labels = (t.to(device) for t in collate([p.chosen for p in items] + [p.rejected for p in items],
                                                           pad_id))
        if use_adapter:
            logps = sequence_logps(model, ids, mask, labels)
        else:
            with model.disable_adapter():
                logps = sequence_logps(model, ids, mask, labels)
        for k, p in enumerate(items):
            p.ref_chosen, p.ref_rejected = float(logps[k]), float(logps[len(items) + k])
    model.train(was_training)


@torch.no_grad()
def pair_logps(model, pairs: list[Pair]) -> list[tuple[float, float]]:
    """(log p(preferred), log p(non-preferred)) of each pair under `model`, summed over each output's trained
    tokens, one unpadded sequence at a time (scoring held-out pairs: benchmarks and tests)."""
    out = []
    for p in pairs:
        sides = []
        for side in (p.chosen, p.rejected):
            ids = torch.tensor([side.input_ids])
            sides.append(float(sequence_logps(model, ids, torch.ones_like(ids), torch.tensor([side.labels]))))
        out.append((sides[0], sides[1]))
    return out


@torch.no_grad()
def evaluate(objective: Objective, model, items: list, indices: list[int], lengths: list[int], device) -> dict:
    """Mean metrics ({name: value}, the objective's metric_names) over the given items."""
    model.eval()
    sums, denominator = dict.fromkeys(objective.metric_names, 0.0), 0
    for mb in micro_batches(indices, lengths):
        batch = [items[i] for i in mb]
        _, stats = objective.loss(model, batch, device)
        sums = {k: sums[k] + stats[k] for k in sums}
        denominator += objective.denominator(batch)
    model.train()
    return {k: v / max(denominator, 1) for k, v in sums.items()}
