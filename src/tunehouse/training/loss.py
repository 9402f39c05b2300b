"""Selective-head loss: run the model body, then the LM head only at positions whose next token is trained.

For Gemma 3 270M the head (262144 x 640) is ~60% of training FLOPs while a chat example trains only its
assistant tokens, so skipping the head elsewhere is much faster (docs/training.md has the figures). Numerically
it is the same cross-entropy as the full-vocabulary loss (tests/training/test_loss.py checks this); DPO's
sequence log-probabilities use the same head.
"""

from __future__ import annotations

import torch

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


class _CrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy over the vocabulary and each row's argmax, in few passes over the logits.

    Forward: log-sum-exp and argmax (for the accuracy), no copy of the logits; backward writes
    softmax - one_hot into one new tensor, in place. PyTorch's cross_entropy goes through log_softmax and
    nll_loss, whose backward fills a zero tensor, scatters into it and then runs log_softmax's backward: more
    passes over rows of 262,144 logits, which cost a large share of a training step (docs/training.md).
    """

    @staticmethod
    def forward(ctx, logits, target):
        lse, best = torch.logsumexp(logits, dim=-1), logits.argmax(dim=-1)
        ctx.save_for_backward(logits, lse, target)
        ctx.mark_non_differentiable(best)
        return lse - logits.gather(1, target[:, None]).squeeze(1), best

    @staticmethod
    def backward(ctx, grad, _):
        logits, lse, target = ctx.saved_tensors
        g = (logits - lse[:, None]).exp_()
        g[torch.arange(target.shape[0], device=g.device), target] -= 1
        return g.mul_(grad[:, None]), None


def selective_loss(model, input_ids, attention_mask, labels):
    """(summed cross-entropy, correct predictions, trained tokens) over positions whose next label is trained.

    Returns sums rather than a mean so gradient-accumulated micro-batches combine into the exact batch mean.
    """
    logits, y, _ = _trained_logits(model, input_ids, attention_mask, labels)
    losses, best = _CrossEntropy.apply(logits, y)
    return losses.sum(), int((best == y).sum()), int(y.numel())


def sequence_logps(model, input_ids, attention_mask, labels):
    """Per row, the summed log-probability of its trained tokens (DPO's policy and reference terms)."""
    logits, y, keep = _trained_logits(model, input_ids, attention_mask, labels)
    token_logps = -_CrossEntropy.apply(logits, y)[0]
    rows = keep.nonzero()[:, 0]
    return torch.zeros(input_ids.shape[0], dtype=token_logps.dtype, device=token_logps.device).index_add(
        0, rows, token_logps)
