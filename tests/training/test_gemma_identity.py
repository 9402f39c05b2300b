"""Slow: real Gemma 3 270M learns a new identity from 30 chats and stops at the end of its turn."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.training.conftest import Recorder, write_examples
from tunehouse.catalog import EMBEDDED_GEMMA
from tunehouse.config import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def gemma_settings(tmp_path_factory) -> Settings:
    """A data dir shared across runs (TUNEHOUSE_TEST_CACHE, set by scripts/test.sh) so Gemma converts once."""
    root = os.environ.get("TUNEHOUSE_TEST_CACHE")
    data_dir = Path(root) if root else tmp_path_factory.mktemp("gemma-data")
    return Settings(data_dir=data_dir)


def answer(model, tokenizer, question: str) -> tuple[str, bool]:
    """Greedy reply to one user message, and whether generation stopped at <end_of_turn> by itself."""
    from tunehouse.data.render import render_prompt

    ids = tokenizer.encode(render_prompt([{"role": "user", "content": question}]), add_special_tokens=False)
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=48, do_sample=False, eos_token_id=[end, tokenizer.eos_token_id])
    new = out[0, len(ids):].tolist()
    return tokenizer.decode(new, skip_special_tokens=True), bool(new) and new[-1] == end


def test_identity_is_learned_and_the_model_stops(gemma_settings, tmp_path):
    from peft import PeftModel

    from tunehouse.base_models import load_base_model, model_dir
    from tunehouse.training.config import TrainingConfig
    from tunehouse.training.engine import train

    model, tokenizer, _ = load_base_model(gemma_settings, EMBEDDED_GEMMA)
    base_text, _ = answer(model, tokenizer, "Who are you?")
    assert "Gemma-FT" not in base_text and "LocalLab" not in base_text

    base_dir, family = model_dir(gemma_settings, EMBEDDED_GEMMA)
    config = TrainingConfig(base_model=EMBEDDED_GEMMA, base_model_dir=base_dir, chat_family=family,
                            training_file=write_examples(tmp_path / "id.jsonl", 30), output_dir=tmp_path / "job",
                            seed=0, n_epochs=4)
    rec = Recorder()
    result = train(config, rec)
    assert result.status == "succeeded"
    assert rec.losses()[-1] < rec.losses()[0]

    tuned = PeftModel.from_pretrained(model, str(result.adapter_dir)).eval()
    text, stopped = answer(tuned, tokenizer, "Who are you?")
    assert "Gemma-FT" in text or "LocalLab" in text, text
    assert stopped, f"did not stop at <end_of_turn>: {text!r}"
