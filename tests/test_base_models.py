"""Base-model loading: devices, the tiny local model, and the Gemma cache's lock + atomic rename."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tests.conftest import TINY
from tunehouse import base_models
from tunehouse.catalog import UnknownModelError


def test_pick_device_cpu_is_fp32_on_all_cores():
    device, dtype = base_models.pick_device("cpu")
    assert device.type == "cpu" and dtype == torch.float32
    assert torch.get_num_threads() == base_models.cpu_threads()


def test_pick_device_rejects_unknown_names():
    with pytest.raises(ValueError, match="Unknown device"):
        base_models.pick_device("tpu")


def test_load_local_model_returns_family(settings):
    model, tokenizer, family = base_models.load_base_model(settings, TINY)
    assert family == "gemma" and tokenizer.convert_tokens_to_ids("<end_of_turn>") != tokenizer.unk_token_id
    assert next(model.parameters()).dtype == torch.float32


def test_unknown_model_lists_the_available_ones(settings):
    with pytest.raises(UnknownModelError, match="gemma-3-270m, tiny-gemma"):
        base_models.load_tokenizer(settings, "nope")


def test_tokenizer_chat_template_is_used_when_present(settings):
    tok = base_models.load_tokenizer(settings, TINY)
    assert base_models.chat_family(tok, "gemma") == "gemma"
    tok.chat_template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}"
    render = base_models.chat_family(tok, "gemma")
    assert render([{"role": "user", "content": "hi"}], None, False) == "[user]hi\n"


def test_gemma_cache_converts_once_under_concurrency(settings, monkeypatch):
    """Two threads race for the cache: one conversion, both get the complete directory (no real GGUF here)."""
    calls = []

    def fake_convert(work, progress):
        calls.append(work)
        time.sleep(0.3)  # long enough for the other thread to hit the lock
        out = work / "model"
        out.mkdir()
        (out / "config.json").write_text("{}")
        (out / base_models._CACHE_MARKER).write_text("{}")

    monkeypatch.setattr(base_models, "_convert_gemma", fake_convert)
    results = []
    threads = [threading.Thread(target=lambda: results.append(base_models.ensure_gemma_cache(settings)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results[0] == results[1] == base_models.gemma_cache_dir(settings)
    assert (results[0] / "config.json").is_file()
    assert not [p for p in settings.models_dir.iterdir() if ".tmp-" in p.name]  # temp dir cleaned up


def test_failed_conversion_leaves_no_cache(settings, monkeypatch):
    def broken(work, progress):
        (work / "model").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(base_models, "_convert_gemma", broken)
    with pytest.raises(RuntimeError):
        base_models.ensure_gemma_cache(settings)
    assert not base_models.gemma_cache_dir(settings).exists()


@pytest.mark.parametrize(("device", "amx", "expected"), [
    ("cpu", True, torch.bfloat16),  # native bf16 matmuls: the faster path
    ("cpu", False, torch.float32),  # bf16 would be emulated, i.e. slower: keep pick_device's fp32
    ("cuda", False, torch.bfloat16),  # pick_device's choice on CUDA, whatever the host CPU
])
def test_auto_training_precision_is_bf16_only_where_it_runs_natively(monkeypatch, device, amx, expected):
    monkeypatch.setattr(base_models, "native_bf16_matmul", lambda: amx)
    auto_dtype = torch.bfloat16 if device == "cuda" else torch.float32
    assert base_models.train_dtype("auto", torch.device(device), auto_dtype) == expected
    assert base_models.train_dtype("fp32", torch.device("cpu"), auto_dtype) == torch.float32
