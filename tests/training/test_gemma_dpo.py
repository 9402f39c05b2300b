"""Slow: DPO on real Gemma 3 270M makes it prefer the new identity on held-out questions it never trained on.

The pairs (tests/fixtures/make_identity_pairs.py) come from the quickstart's identity split: the identity answer
("Gemma-FT" by "LocalLab") is preferred over the same answer naming the base's own identity ("Gemma" by "Google
DeepMind"), which the base model prefers. Preference accuracy = the share of held-out pairs whose preferred
output has the higher summed log-probability (assistant tokens + end of turn), as `tunehouse eval` scores them.
"""

from __future__ import annotations

import pytest

from tests.tiny import FIXTURES
from tests.training.conftest import Recorder
from tests.training.test_gemma_identity import answer, gemma_settings  # noqa: F401  (the shared Gemma data dir)
from tunehouse.catalog import EMBEDDED_GEMMA

pytestmark = pytest.mark.slow


def preference_logps(model, tokenizer, family) -> list[tuple[float, float]]:
    """(log p(preferred), log p(non-preferred)) per held-out pair."""
    from tunehouse.training.batches import encode_file
    from tunehouse.training.objectives import pair_logps

    return pair_logps(model, encode_file(FIXTURES / "identity_pairs_heldout.jsonl",
                                         lambda s: tokenizer.encode(s, add_special_tokens=False), family, 1024,
                                         method="dpo"))


def test_dpo_makes_gemma_prefer_the_new_identity_on_held_out_pairs(gemma_settings, tmp_path):  # noqa: F811
    from peft import PeftModel

    from tunehouse.base_models import load_base_model, model_dir
    from tunehouse.training.config import TrainingConfig
    from tunehouse.training.engine import train

    model, tokenizer, family = load_base_model(gemma_settings, EMBEDDED_GEMMA)
    model.eval()
    base = preference_logps(model, tokenizer, family)
    base_dir, family_name = model_dir(gemma_settings, EMBEDDED_GEMMA)
    config = TrainingConfig(base_model=EMBEDDED_GEMMA, base_model_dir=base_dir, chat_family=family_name,
                            training_file=FIXTURES / "identity_pairs_train.jsonl", output_dir=tmp_path / "job",
                            method="dpo", seed=0, n_epochs=1)  # beta, batch and learning rate: auto
    rec = Recorder()
    result = train(config, rec)
    assert result.status == "succeeded" and result.hyperparameters["beta"] > 0
    tuned_model = PeftModel.from_pretrained(model, str(result.adapter_dir)).eval()
    tuned = preference_logps(tuned_model, tokenizer, family)
    n = len(base)
    base_acc, tuned_acc = (sum(p > r for p, r in logps) / n for logps in (base, tuned))
    margin = [sum(p - r for p, r in logps) / n for logps in (base, tuned)]
    preferred_drift = sum(t[0] - b[0] for t, b in zip(tuned, base, strict=True)) / n
    print(f"held-out preference accuracy: base {base_acc:.1%} -> DPO {tuned_acc:.1%} ({n} pairs); mean margin "
          f"{margin[0]:.2f} -> {margin[1]:.2f}; preferred log-prob change {preferred_drift:+.2f} nats per pair; "
          f"train loss {rec.losses()[0]:.3f} -> {rec.losses()[-1]:.3f}; "
          f"greedy 'Who are you?': {answer(tuned_model, tokenizer, 'Who are you?')[0]!r}")
    assert tuned_acc >= base_acc + 0.5  # clearly better: at least half the held-out pairs flip
    assert margin[1] > margin[0]
    # DPO can win the ranking by pushing both answers down (1e-4 did: -83 nats per pair, and a model that
    # babbled); the auto rate must keep the preferred answers about as likely as the base found them.
    assert preferred_drift > -20
