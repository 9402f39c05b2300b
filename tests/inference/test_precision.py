"""The base GGUF precision llama.cpp serves (Settings.inference_precision): conversion, caching, closeness to the
reference, and llama.cpp's own log kept off stderr."""

from __future__ import annotations

import typing

import llama_cpp  # noqa: F401 - a hard dependency: a broken build must fail, not skip
import numpy as np
import pytest

from tests.conftest import TINY
from tests.inference.conftest import PROMPTS


def prompt_ids(tok, text):
    from tunehouse.data.render import render_prompt

    return tok(render_prompt([{"role": "user", "content": text}]), add_special_tokens=False)["input_ids"]


def test_precision_names_are_the_converters_and_bad_ones_are_refused():
    from pydantic import ValidationError

    from tunehouse.config import Settings
    from tunehouse.inference.gguf_convert import BASE_PRECISIONS

    field = Settings.model_fields["inference_precision"]
    assert set(typing.get_args(field.annotation)) == set(BASE_PRECISIONS)
    assert field.default == "f16"
    with pytest.raises(ValidationError, match="f16"):
        Settings(inference_precision="q3")


def test_precision_gguf_is_converted_once_with_the_source_metadata(serve_settings):
    import gguf

    from tunehouse.inference.engine_llamacpp import base_gguf

    serve_settings.inference_precision = "original"
    source = base_gguf(serve_settings, TINY)
    serve_settings.inference_precision = "f32"
    assert base_gguf(serve_settings, TINY) == source  # a local model's own conversion is already f32
    serve_settings.inference_precision = "f16"
    path = base_gguf(serve_settings, TINY)
    assert path != source and path.parent == serve_settings.models_dir / "gguf"
    stamp = path.stat().st_mtime_ns
    assert base_gguf(serve_settings, TINY) == path and path.stat().st_mtime_ns == stamp  # cached, not rewritten

    src, out = gguf.GGUFReader(str(source)), gguf.GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in out.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["token_embd.weight"] == "F16"
    assert types["blk.0.attn_norm.weight"] == "F32"  # norms stay f32
    assert out.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_F16)
    assert out.fields["tokenizer.ggml.tokens"].contents() == src.fields["tokenizer.ggml.tokens"].contents()
    a = {t.name: np.array(t.data, dtype=np.float32) for t in src.tensors}
    for t in out.tensors:
        np.testing.assert_allclose(np.array(t.data, dtype=np.float32).reshape(a[t.name].shape), a[t.name],
                                   rtol=1e-3, atol=1e-6)


def test_mixed_precision_quantizes_only_the_head(serve_settings):
    import gguf

    from tunehouse.inference.engine_llamacpp import base_gguf

    serve_settings.inference_precision = "original"
    source = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(base_gguf(serve_settings, TINY))).tensors}
    serve_settings.inference_precision = "f32-q8head"
    tensors = {t.name: t for t in gguf.GGUFReader(str(base_gguf(serve_settings, TINY))).tensors}
    assert tensors["token_embd.weight"].tensor_type.name == "Q8_0"
    assert tensors["blk.1.ffn_down.weight"].tensor_type.name == "F32"
    np.testing.assert_array_equal(np.array(tensors["blk.1.ffn_down.weight"].data), source["blk.1.ffn_down.weight"])


def test_f16_base_stays_close_to_the_reference(serve_settings, adapters):
    from tunehouse.inference.engine_hf import HFEngine
    from tunehouse.inference.engine_llamacpp import LlamaCppEngine
    from tunehouse.inference.generate import generate, stop_token_ids
    from tunehouse.inference.sampling import SamplingParams

    hf = HFEngine(serve_settings, TINY)
    serve_settings.inference_precision = "f16"
    fast = LlamaCppEngine(serve_settings, TINY, tokenizer=hf.tokenizer, family=hf.family)
    assert fast.gguf_path.name.endswith(".f16.gguf")
    ids = prompt_ids(hf.tokenizer, PROMPTS[0])
    for adapter in (None, adapters["alpha"]):
        ref, got = hf.prefill(ids, adapter), fast.prefill(ids, adapter)
        hf.end(), fast.end()
        # logits of magnitude ~23: f16 weights and activations stay within 0.007 (8-bit q8_0 ones: 0.1-0.15)
        assert np.abs(got - ref).max() < 0.02
        assert got.argmax() == ref.argmax()
    stops = stop_token_ids(hf.tokenizer)
    for text in PROMPTS:
        runs = [[c.token for p in generate(e, prompt_ids(hf.tokenizer, text), adapters["beta"],
                                           SamplingParams(32, 0.0), stops) for c in p.tokens] for e in (hf, fast)]
        assert runs[0] == runs[1]


def test_llama_cpp_log_goes_to_python_logging_not_stderr(serve_settings, adapters, capfd, caplog):
    from tunehouse.inference.engine_llamacpp import LlamaCppEngine

    capfd.readouterr()
    with caplog.at_level("DEBUG", logger="tunehouse.inference.llama_cpp"):
        fast = LlamaCppEngine(serve_settings, TINY)
        fast.prefill(prompt_ids(fast.tokenizer, PROMPTS[0]), adapters["alpha"])  # loads an adapter
        fast.end()
    err = capfd.readouterr().err
    assert not [line for line in err.splitlines() if line.startswith(("llama_", "load", "print_info"))], err
    routed = [r for r in caplog.records if r.name == "tunehouse.inference.llama_cpp"]
    assert any("lora" in r.getMessage().lower() for r in routed)  # the adapter load was logged, one line each
    assert all("\n" not in r.getMessage() for r in routed)
