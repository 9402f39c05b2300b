"""Slow: DPO on real Gemma 3 270M makes it prefer the new identity on held-out questions it never trained on.

The pairs (tests/fixtures/make_identity_pairs.py) come from the quickstart's identity split: the identity answer
("Gemma-FT" by "LocalLab") is preferred over the same answer naming the base's own identity ("Gemma" by "Google
DeepMind"), which the base model prefers. Preference accuracy = the share of held-out pairs whose preferred
output has the higher summed log-probability (assistant tokens + end of turn), as `tunehouse eval` scores them.
"""

from __future__ import annotations

import pytest
import torch

from tests.tiny import FIXTURES
from tests.training.conftest import Recorder
from tests.training.test_gemma_identity import gemma_settings  # noqa: F401  (the shared Gemma data dir)
from tunehouse.catalog import EMBEDDED_GEMMA

pytestmark = pytest.mark.slow


def preference_margins(model, tokenizer, family) -> list[float]:
    """log p(preferred) - log p(non-preferred) per held-out pair."""
    from tunehouse.training.batches import encode_file
    from tunehouse.training.loss import sequence_logps

    pairs = encode_file(FIXTURES / "identity_pairs_heldout.jsonl",
                        lambda s: tokenizer.encode(s, add_special_tokens=False), family, 1024, method="dpo")
    out = []
    with torch.no_grad():
        for p in pairs:
            sides = []
            for side in (p.chosen, p.rejected):
                ids = torch.tensor([side.input_ids])
                sides.append(float(sequence_logps(model, ids, torch.ones_like(ids), torch.tensor([side.labels]))))
            out.append(sides[0] - sides[1])
    return out


def test_dpo_makes_gemma_prefer_the_new_identity_on_held_out_pairs(gemma_settings, tmp_path):  # noqa: F811
    from peft import PeftModel

    from tunehouse.base_models import load_base_model, model_dir
    from tunehouse.training.config import TrainingConfig
    from tunehouse.training.engine import train

    model, tokenizer, family = load_base_model(gemma_settings, EMBEDDED_GEMMA)
    model.eval()
    base = preference_margins(model, tokenizer, family)
    base_dir, family_name = model_dir(gemma_settings, EMBEDDED_GEMMA)
    config = TrainingConfig(base_model=EMBEDDED_GEMMA, base_model_dir=base_dir, chat_family=family_name,
                            training_file=FIXTURES / "identity_pairs_train.jsonl", output_dir=tmp_path / "job",
                            method="dpo", seed=0, n_epochs=1)  # beta, batch and learning rate: auto
    rec = Recorder()
    result = train(config, rec)
    assert result.status == "succeeded" and result.hyperparameters["beta"] > 0
    tuned = preference_margins(PeftModel.from_pretrained(model, str(result.adapter_dir)).eval(), tokenizer, family)
    base_acc = sum(m > 0 for m in base) / len(base)
    tuned_acc = sum(m > 0 for m in tuned) / len(tuned)
    print(f"held-out preference accuracy: base {base_acc:.1%} -> DPO {tuned_acc:.1%} ({len(base)} pairs); "
          f"mean margin {sum(base) / len(base):.2f} -> {sum(tuned) / len(tuned):.2f}; "
          f"train loss {rec.losses()[0]:.3f} -> {rec.losses()[-1]:.3f}")
    assert tuned_acc >= base_acc + 0.5  # clearly better: at least half the held-out pairs flip
    assert sum(tuned) > sum(base)
