"""The fast engine (llama.cpp on GGUF) against the reference (transformers + peft) on the tiny model.

The tiny base is converted to a float32 GGUF, so any difference beyond float rounding would be a mapping error
in the LoRA conversion (names, layout, alpha/r scaling) or the base conversion (norm +1, tied head).
"""

from __future__ import annotations

import json

import llama_cpp  # a hard dependency: a missing or broken build must fail here, not skip
import numpy as np
import pytest

from tests.conftest import TINY
from tests.inference.conftest import ALPHA_TEXT, PROMPTS


@pytest.fixture
def engines(serve_settings):
    from tunehouse.inference.engine_hf import HFEngine
    from tunehouse.inference.engine_llamacpp import LlamaCppEngine

    return HFEngine(serve_settings, TINY), LlamaCppEngine(serve_settings, TINY)


def test_llama_cpp_has_the_internals_the_engine_uses(serve_settings):
    """engine_llamacpp drives llama-cpp-python below its public API; a version that moved any of it fails here."""
    from tunehouse.inference.engine_llamacpp import LlamaCppEngine

    for name in ("llama_set_adapters_lora", "llama_adapter_lora_init", "llama_adapter_lora_free",
                 "llama_adapter_lora_p_ctypes", "llama_set_n_threads", "llama_log_callback", "llama_log_set",
                 "llama_decode", "llama_get_logits_ith", "llama_get_memory", "llama_memory_seq_rm",
                 "llama_memory_seq_pos_min", "llama_model_n_swa", "llama_n_seq_max", "llama_backend_init"):
        assert callable(getattr(llama_cpp, name, None)), f"llama_cpp.{name} is gone"
    engine = LlamaCppEngine(serve_settings, TINY)
    assert engine._ctx.ctx and engine._model.model, "LlamaContext.ctx / LlamaModel.model (raw pointers) are gone"
    assert llama_cpp.llama_n_seq_max(engine._ctx.ctx) == serve_settings.inference_slots
    batch = engine._batch.batch
    for field in ("token", "pos", "seq_id", "n_seq_id", "logits", "n_tokens"):
        assert hasattr(batch, field), f"llama_batch.{field} is gone"
    assert engine.vocab_size > 0


def prompt_ids(tok, text):
    from tunehouse.data.render import render_prompt

    return tok(render_prompt([{"role": "user", "content": text}]), add_special_tokens=False)["input_ids"]


def test_llamacpp_logits_match_peft_with_and_without_adapter(engines, adapters):
    hf, fast = engines
    ids = prompt_ids(hf.tokenizer, PROMPTS[0])
    for adapter in (None, adapters["alpha"], adapters["beta"], None):
        ref, got = hf.prefill(ids, adapter), fast.prefill(ids, adapter)
        np.testing.assert_allclose(got, ref, atol=5e-3)  # float32 rounding on logits of magnitude ~25
        token = int(ref.argmax())
        np.testing.assert_allclose(fast.step(token), hf.step(token), atol=5e-3)
        hf.end(), fast.end()
    # the adapter really changes the output, so the comparison above covered the LoRA path
    assert not np.allclose(hf.prefill(ids, adapters["alpha"]), hf.prefill(ids, None), atol=1e-2)


def test_llamacpp_prompt_scoring_matches_reference(engines, adapters):
    hf, fast = engines
    ids = prompt_ids(hf.tokenizer, PROMPTS[1])
    ref = dict(hf.score_rows(ids, adapters["beta"]))
    got = dict(fast.score_rows(ids, adapters["beta"]))
    assert sorted(got) == list(range(1, len(ids)))
    for pos in got:
        np.testing.assert_allclose(got[pos], ref[pos], atol=5e-3)  # float32 rounding on logits of magnitude ~25


def test_greedy_generations_agree_and_adapters_switch_without_reloading(engines, adapters):
    from tunehouse.inference.generate import generate, stop_token_ids
    from tunehouse.inference.sampling import SamplingParams

    hf, fast = engines
    stops = stop_token_ids(hf.tokenizer)

    def run(engine, adapter, text):
        pieces = generate(engine, prompt_ids(engine.tokenizer, text), adapter, SamplingParams(32, 0.0), stops)
        return "".join(p.text for p in pieces)

    for adapter in (adapters["alpha"], adapters["beta"], adapters["alpha"]):
        for text in PROMPTS:
            assert run(fast, adapter, text) == run(hf, adapter, text)
    assert fast.adapter_loads == 2


def test_adapter_lru_evicts_and_reloads(engines, adapters):
    hf, fast = engines
    fast.max_adapters = 1
    ids = prompt_ids(fast.tokenizer, PROMPTS[2])
    a1 = fast.prefill(ids, adapters["alpha"])
    fast.prefill(ids, adapters["beta"])
    assert len(fast.adapters) == 1
    np.testing.assert_allclose(fast.prefill(ids, adapters["alpha"]), a1, atol=1e-5)
    assert fast.adapter_loads == 3


def test_lora_gguf_layout_and_alpha(settings, adapters, tmp_path):
    import gguf

    from tunehouse.inference.gguf_convert import write_lora_gguf

    path = write_lora_gguf(adapters["alpha"], tmp_path / "a.gguf")
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(16.0)
    shapes = {t.name: list(t.shape) for t in reader.tensors}  # GGUF lists dims innermost first
    assert shapes["blk.0.attn_q.weight.lora_a"] == [64, 8]  # PyTorch [r=8, in=64]
    assert shapes["blk.0.attn_q.weight.lora_b"] == [8, 64]  # PyTorch [out=2*32, r=8]
    assert shapes["blk.1.ffn_down.weight.lora_a"] == [128, 8]


def test_rslora_scaling_is_folded_into_b(adapters, tmp_path):
    import shutil

    import gguf

    from tunehouse.inference.gguf_convert import write_lora_gguf

    plain = gguf.GGUFReader(str(write_lora_gguf(adapters["alpha"], tmp_path / "plain.gguf")))
    rs = tmp_path / "rslora"
    shutil.copytree(adapters["alpha"], rs)
    cfg = json.loads((rs / "adapter_config.json").read_text())
    cfg["use_rslora"] = True
    (rs / "adapter_config.json").write_text(json.dumps(cfg))
    folded = gguf.GGUFReader(str(write_lora_gguf(rs, tmp_path / "rs.gguf")))
    b0 = {t.name: np.array(t.data) for t in plain.tensors}["blk.0.attn_q.weight.lora_b"]
    b1 = {t.name: np.array(t.data) for t in folded.tensors}["blk.0.attn_q.weight.lora_b"]
    # peft: alpha/sqrt(r) instead of alpha/r -> B grows by sqrt(r) = sqrt(8)
    np.testing.assert_allclose(b1, b0 * np.sqrt(8), rtol=1e-6)


def test_unconvertible_adapter_is_refused_clearly(adapters, tmp_path):
    import shutil

    from tunehouse.inference.gguf_convert import ConversionError, write_lora_gguf

    dora = tmp_path / "dora"
    shutil.copytree(adapters["alpha"], dora)
    cfg = json.loads((dora / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (dora / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="use_dora"):
        write_lora_gguf(dora, tmp_path / "d.gguf")


def test_base_with_other_attention_scale_is_not_converted(settings, tiny_model_dir):
    from tunehouse.inference.service import choose_engine

    settings.engine = "auto"
    name, reason = choose_engine(settings, "tiny-gemma")  # query_pre_attn_scalar 256 != head_dim 32
    assert name == "hf" and "query_pre_attn_scalar" in reason


def test_engine_choice_is_explicit(serve_settings):
    from tunehouse.inference.service import EngineUnavailable, choose_engine

    serve_settings.engine = "auto"
    assert choose_engine(serve_settings, TINY)[0] == "llamacpp"
    serve_settings.engine = "hf"
    assert choose_engine(serve_settings, TINY) == ("hf", "TUNEHOUSE_ENGINE=hf")
    serve_settings.engine = "turbo"
    with pytest.raises(EngineUnavailable, match="auto, llamacpp, hf"):
        choose_engine(serve_settings, TINY)


def test_fast_engine_serves_the_api(serve_settings, adapters):
    """End to end on the llama.cpp engine: a fine-tuned model answers in its style over HTTP."""
    from fastapi.testclient import TestClient

    from tests.inference.conftest import register_models
    from tunehouse.api.app import create_app

    serve_settings.engine = "llamacpp"
    register_models(serve_settings, adapters)
    with TestClient(create_app(serve_settings)) as http:
        r = http.post("/v1/chat/completions", json={
            "model": "ft:tiny-gemma:tunehouse:alpha:aaaa1111", "messages": [{"role": "user", "content": PROMPTS[3]}],
            "temperature": 0, "max_tokens": 30})
    assert r.status_code == 200, r.text
    assert r.json()["system_fingerprint"] == "tunehouse-llamacpp"
    assert r.json()["choices"][0]["message"]["content"] == ALPHA_TEXT


def test_adapter_llamacpp_cannot_run_falls_back_loudly_or_fails_clearly(serve_settings, adapters, tmp_path, caplog):
    import shutil

    from tunehouse.inference.service import EngineUnavailable, InferenceService

    dora = tmp_path / "dora"
    shutil.copytree(adapters["alpha"], dora)
    cfg = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps(cfg | {"use_dora": True}))
    serve_settings.engine = "auto"
    svc = InferenceService(serve_settings)
    assert svc.engine(TINY, adapters["alpha"]).name == "llamacpp"
    with caplog.at_level("WARNING", logger="tunehouse.inference"):
        assert svc.engine(TINY, dora).name == "hf"
    assert "use_dora" in caplog.text and "engine=hf" in caplog.text
    serve_settings.engine = "llamacpp"
    with pytest.raises(EngineUnavailable, match="TUNEHOUSE_ENGINE=auto"):
        InferenceService(serve_settings).engine(TINY, dora)


def test_auto_threads_back_off_while_the_cpu_is_busy(engines, monkeypatch):
    from tunehouse.inference import engine_llamacpp

    _, fast = engines
    if fast.cores < 2:
        pytest.skip("needs 2 cores")
    ids = prompt_ids(fast.tokenizer, PROMPTS[0])
    monkeypatch.setattr(engine_llamacpp.os, "getloadavg", lambda: (fast.threads + 3.0, 0.0, 0.0))
    fast.prefill(ids, None)
    assert fast.threads == fast.cores // 2
    monkeypatch.setattr(engine_llamacpp.os, "getloadavg", lambda: (fast.threads + 0.1, 0.0, 0.0))
    fast.prefill(ids, None)
    assert fast.threads == fast.cores
