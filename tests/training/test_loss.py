"""The selective-head loss is the full-vocabulary cross-entropy, computed only where labels are trained."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunehouse.data.render import IGNORE
from tunehouse.training.loss import selective_loss


def test_selective_loss_equals_full_vocabulary_loss(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)
    ids = torch.randint(10, model.config.vocab_size, (2, 20))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0  # right padding in the second row
    labels = ids.clone()
    labels[:, :8] = IGNORE
    labels[1, 15:] = IGNORE
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss_sum, correct, n = selective_loss(model, ids, mask, labels)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    keep = labels[:, 1:] != IGNORE
    assert n == int(keep.sum())
    assert float(loss_sum) / n == pytest.approx(float(full), rel=1e-5)
    assert correct == int((logits.argmax(-1)[keep] == labels[:, 1:][keep]).sum())


def test_softcapping_is_applied(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model.config.final_logit_softcapping = 0.5  # tiny cap: every logit lands in (-0.5, 0.5)
    ids = torch.randint(10, model.config.vocab_size, (1, 12))
    with torch.no_grad():
        full = model(input_ids=ids, labels=ids).loss
        loss_sum, _, n = selective_loss(model, ids, torch.ones_like(ids), ids)
    assert float(loss_sum) / n == pytest.approx(float(full), rel=1e-5)


def test_selective_loss_gradients_equal_full_vocabulary_gradients(tiny_model_dir):
    """Skipping the head at untrained positions changes no gradient either."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.manual_seed(1)
    ids = torch.randint(10, model.config.vocab_size, (2, 16))
    labels = ids.clone()
    labels[:, :5] = IGNORE
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in params]

    loss_sum, _, n = selective_loss(model, ids, torch.ones_like(ids), labels)
    ours = grads(loss_sum / n)
    theirs = grads(model(input_ids=ids, labels=labels).loss)
    assert any(float(g.abs().max()) > 0 for g in theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
