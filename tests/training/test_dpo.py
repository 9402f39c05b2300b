"""DPO through the one training loop, on the tiny model: the loss, the frozen reference, learning, control."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tests.training.conftest import Recorder
from tunehouse.training.batches import encode_file
from tunehouse.training.checkpoints import REFERENCE_FILE, RESUME_FILE
from tunehouse.training.engine import _prepare, train
from tunehouse.training.loss import sequence_logps
from tunehouse.training.objectives import pair_logps

DPO_KEYS = {"train_loss", "train_rewards_accuracy", "train_rewards_margin", "train_chosen_logps",
            "train_rejected_logps"}


def _margins(model, tokenizer, path) -> list[float]:
    """Per pair: log p(preferred) - log p(non-preferred), summed over each output's trained tokens."""
    pairs = encode_file(path, lambda s: tokenizer.encode(s, add_special_tokens=False), "gemma", 128, method="dpo")
    return [c - r for c, r in pair_logps(model, pairs)]


def test_first_step_loss_is_log2_and_metrics_are_dpos(make_dpo_config):
    rec = Recorder()
    result = train(make_dpo_config(), rec)
    assert result.status == "succeeded" and result.hyperparameters["beta"] == 0.1
    first = rec.metrics[0]
    # Before the first update the policy is the reference: every implicit reward is 0, the loss log(2).
    assert first["train_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["train_rewards_margin"] == pytest.approx(0, abs=1e-5)
    assert DPO_KEYS <= set(first) and "train_mean_token_accuracy" not in first
    assert all(m["train_chosen_logps"] < 0 and m["train_rejected_logps"] < 0 for m in rec.metrics)
    valid = [m for m in rec.metrics if "valid_loss" in m]
    assert valid and {"valid_rewards_accuracy", "valid_rewards_margin", "valid_chosen_logps",
                      "valid_rejected_logps"} <= set(valid[-1])
    assert rec.checkpoints and "full_valid_rewards_accuracy" in rec.checkpoints[-1].metrics


def test_loss_falls_and_rewards_accuracy_rises(make_dpo_config):
    rec = Recorder()
    train(make_dpo_config(n_epochs=4), rec)
    first, last = rec.metrics[:3], rec.metrics[-3:]
    assert sum(m["train_loss"] for m in last) < sum(m["train_loss"] for m in first) - 0.3
    assert sum(m["train_rewards_accuracy"] for m in last) / 3 > 0.9
    assert sum(m["train_rewards_margin"] for m in last) > 0
    assert rec.checkpoints[-1].metrics["full_valid_loss"] < math.log(2)  # held-out pairs learned too


def test_preferred_logprob_rises_relative_to_non_preferred(make_dpo_config, settings):
    from peft import PeftModel

    from tunehouse.base_models import load_base_model

    config = make_dpo_config(n_epochs=4)
    result = train(config, Recorder())
    base, tok, _ = load_base_model(settings, config.base_model, torch.device("cpu"), torch.float32)
    before = _margins(base, tok, config.training_file)
    tuned = PeftModel.from_pretrained(base, str(result.adapter_dir))
    after = _margins(tuned, tok, config.training_file)
    assert sum(after) / len(after) > sum(before) / len(before) + 1.0
    assert sum(a > b for a, b in zip(after, before, strict=True)) >= 0.9 * len(after)


def test_reference_is_the_frozen_starting_model(make_dpo_config, settings):
    from tunehouse.base_models import load_base_model

    config = make_dpo_config()
    run = _prepare(config, Recorder())
    base_before = {n: p.detach().clone() for n, p in run.model.named_parameters() if "lora_" not in n}
    train(config, Recorder())
    stored = json.loads((config.output_dir / REFERENCE_FILE).read_text())["logps"]
    # The stored reference is the base model's own log-probs (a fresh LoRA starts as the identity) ...
    base, tok, _ = load_base_model(settings, config.base_model, torch.device("cpu"), torch.float32)
    pairs = encode_file(config.training_file, lambda s: tok.encode(s, add_special_tokens=False), "gemma", 128,
                        method="dpo")
    with torch.no_grad():
        for (ref_c, ref_r), p in zip(stored, pairs, strict=False):
            for ref, side in ((ref_c, p.chosen), (ref_r, p.rejected)):
                ids = torch.tensor([side.input_ids])
                assert float(sequence_logps(base, ids, torch.ones_like(ids), torch.tensor([side.labels]))) == \
                    pytest.approx(ref, abs=1e-4)
    # ... and training moved only LoRA weights: with the adapter disabled the model is still that base.
    assert all(torch.equal(p, base_before[n]) for n, p in run.model.named_parameters() if "lora_" not in n)


def test_dpo_from_an_sft_adapter_uses_it_as_reference(make_config, make_dpo_config, tmp_path):
    sft = train(make_config("sft", n_epochs=1), Recorder())
    config = make_dpo_config("dpo_from_sft", init_adapter=sft.adapter_dir)
    rec = Recorder()
    result = train(config, rec)
    assert result.status == "succeeded"
    # Reference = the SFT model, so the first step starts at log(2) again (not at the base's margin).
    assert rec.metrics[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-5)
    plain = make_dpo_config("dpo_base_only", n_epochs=1)
    train(plain, Recorder())
    sft_ref = json.loads((config.output_dir / REFERENCE_FILE).read_text())["logps"]
    base_ref = json.loads((plain.output_dir / REFERENCE_FILE).read_text())["logps"]
    assert max(abs(a - b) for x, y in zip(sft_ref, base_ref, strict=True) for a, b in zip(x, y, strict=True)) > 0.1


def test_same_seed_same_curve(make_dpo_config):
    a, b = Recorder(), Recorder()
    train(make_dpo_config("a"), a)
    train(make_dpo_config("b"), b)
    assert a.losses() == b.losses()


def test_pause_then_resume_matches_uninterrupted(make_dpo_config):
    reference = Recorder()
    train(make_dpo_config("ref", n_epochs=3), reference)
    config = make_dpo_config("paused", n_epochs=3)
    first = Recorder(act=lambda done: "pause" if done == 4 else "continue")
    assert train(config, first).status == "paused" and (config.output_dir / RESUME_FILE).is_file()
    second = Recorder()
    assert train(config, second).status == "succeeded"
    assert first.losses() + second.losses() == pytest.approx(reference.losses(), rel=1e-6)
    rewards = [m["train_rewards_accuracy"] for m in first.metrics + second.metrics]
    assert rewards == pytest.approx([m["train_rewards_accuracy"] for m in reference.metrics])


def test_cancel_stops_within_one_step(make_dpo_config):
    rec = Recorder(act=lambda done: "cancel" if done == 2 else "continue")
    assert train(make_dpo_config(), rec).status == "cancelled" and len(rec.metrics) == 2


def test_dpo_loss_matches_a_full_vocabulary_computation(make_dpo_config):
    """The selective head's sequence log-probs equal log_softmax over the whole vocabulary."""
    run = _prepare(make_dpo_config(), Recorder())
    pair = run.train_set[0]
    lm = run.model.get_base_model()
    for side in (pair.chosen, pair.rejected):
        ids, labels = torch.tensor([side.input_ids]), torch.tensor([side.labels])
        with torch.no_grad():
            logits = lm(input_ids=ids).logits.float()
            logp = F.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            full = float((logp * (labels[:, 1:] != -100)).sum())
            assert float(sequence_logps(run.model, ids, torch.ones_like(ids), labels)) == pytest.approx(full, abs=1e-4)


def test_a_chat_file_for_dpo_is_a_clear_error(make_dpo_config, tmp_path):
    from tests.training.conftest import write_examples

    config = make_dpo_config(training_file=write_examples(tmp_path / "chat.jsonl", 4), validation_file=None)
    with pytest.raises(ValueError, match="line 1: Preference example has no 'input.messages' list"):
        train(config, Recorder())


def test_bad_beta_is_a_clear_error(make_dpo_config):
    with pytest.raises(ValueError, match=r"beta=3.0 \(must be in \(0, 2\]"):
        train(make_dpo_config(beta=3.0), Recorder())
