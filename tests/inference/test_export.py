"""`tunehouse export`: each format loads back outside tunehouse and gives the served model's outputs."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import TINY
from tests.inference.conftest import ALPHA_TEXT, FT_A, PROMPTS, register_models
from tunehouse.data.render import render_prompt


@pytest.fixture
def exported(serve_settings, adapters, tmp_path, monkeypatch):
    register_models(serve_settings, adapters)
    monkeypatch.setenv("TUNEHOUSE_INFERENCE_PRECISION", serve_settings.inference_precision)  # the CLI reads env
    return serve_settings, tmp_path


def export(settings, model, fmt, out):
    from tunehouse.cli import app

    return CliRunner().invoke(app, ["export", model, "--format", fmt, "--out", str(out),
                                    "--data-dir", str(settings.data_dir)])


def reference_logits(settings, adapter_dir, ids):
    from tunehouse.inference.engine_hf import HFEngine

    engine = HFEngine(settings, TINY)
    return engine.prefill(ids, adapter_dir)


def prompt_ids(tok):
    return tok(render_prompt([{"role": "user", "content": PROMPTS[0]}]), add_special_tokens=False)["input_ids"]


def test_peft_export_loads_with_peft(exported, adapters, serve_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings, tmp = exported
    r = export(settings, FT_A, "peft", tmp / "peft")
    assert r.exit_code == 0, r.output
    tok = AutoTokenizer.from_pretrained(tmp / "peft")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(serve_model_dir), tmp / "peft").eval()
    ids = prompt_ids(tok)
    with torch.inference_mode():
        got = model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    np.testing.assert_allclose(got, reference_logits(settings, adapters["alpha"], ids), atol=1e-4)


def test_merged_export_loads_with_plain_transformers(exported, adapters):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings, tmp = exported
    assert export(settings, FT_A, "merged", tmp / "merged").exit_code == 0
    assert not (tmp / "merged" / "adapter_config.json").exists()
    tok = AutoTokenizer.from_pretrained(tmp / "merged")
    model = AutoModelForCausalLM.from_pretrained(tmp / "merged").eval()
    ids = prompt_ids(tok)
    with torch.inference_mode():
        got = model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        out = model.generate(torch.tensor([ids]), max_new_tokens=30, do_sample=False)
    np.testing.assert_allclose(got, reference_logits(settings, adapters["alpha"], ids), atol=1e-3)
    assert tok.decode(out[0, len(ids):], skip_special_tokens=True).startswith(ALPHA_TEXT)


def test_gguf_export_loads_in_llama_cpp(exported, adapters):
    import llama_cpp

    from tunehouse.base_models import load_tokenizer

    settings, tmp = exported
    assert export(settings, FT_A, "gguf", tmp / "gguf").exit_code == 0
    llm = llama_cpp.Llama(model_path=str(tmp / "gguf" / "base.gguf"), lora_path=str(tmp / "gguf" / "adapter.gguf"),
                          n_ctx=256, logits_all=True, verbose=False)
    tok = load_tokenizer(settings, TINY)
    ids = prompt_ids(tok)
    llm.eval(ids)
    got = np.array(llm.scores[len(ids) - 1])
    llm.close()
    np.testing.assert_allclose(got, reference_logits(settings, adapters["alpha"], ids), atol=5e-3)


def test_export_errors_are_one_line(exported):
    settings, tmp = exported
    r = export(settings, "ft:tiny-gemma:tunehouse:nope:00000000", "peft", tmp / "x")
    assert r.exit_code == 1 and "does not exist" in r.output
    r = export(settings, TINY, "peft", tmp / "y")
    assert r.exit_code == 1 and "base model" in r.output
    r = export(settings, FT_A, "onnx", tmp / "z")
    assert r.exit_code != 0 and "peft, merged, gguf" in r.output
