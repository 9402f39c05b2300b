"""Selective-head loss: run the model body, then the LM head only at positions whose next token is trained.

For Gemma 3 270M the head (262144 x 640) is ~60% of training FLOPs while a chat example trains only its
assistant tokens, so skipping the head elsewhere is much faster (docs/training.md has the figures). Numerically
it is the same cross-entropy as the full-vocabulary loss (tests/training/test_loss.py checks this); DPO's
sequence log-probabilities use the same head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunehouse.data.render import IGNORE


def causal_lm(model):
    """The transformers CausalLM inside a (possibly peft-wrapped) model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _trained_logits(model, input_ids, attention_mask, labels):
    """(fp32 logits, targets, keep mask) at the positions whose next label is trained: the body runs on every
    token, the LM head only where a loss is taken."""
    lm = causal_lm(model)
    hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits, targets[keep], keep


def selective_loss(model, input_ids, attention_mask, labels):
    """(summed cross-entropy, correct predictions, trained tokens) over positions whose next label is trained.

    Returns sums rather than a mean so gradient-accumulated micro-batches combine into the exact batch mean.
    """
    logits, y, _ = _trained_logits(model, input_ids, attention_mask, labels)
    loss_sum = F.cross_entropy(logits, y, reduction="sum")
    correct = (logits.detach().argmax(-1) == y).sum()
    return loss_sum, int(correct), int(y.numel())


def sequence_logps(model, input_ids, attention_mask, labels):
    """Per row, the summed log-probability of its trained tokens (DPO's policy and reference terms)."""
    logits, y, keep = _trained_logits(model, input_ids, attention_mask, labels)
    token_logps = -F.cross_entropy(logits, y, reduction="none")
    rows = keep.nonzero()[:, 0]
    return torch.zeros(input_ids.shape[0], dtype=token_logps.dtype, device=token_logps.device).index_add(
        0, rows, token_logps)
