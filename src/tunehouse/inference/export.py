"""Export a model for use outside tunehouse: the PEFT adapter, merged HF safetensors, or GGUF for llama.cpp.

- peft: the adapter directory as trained (adapter_config.json + adapter_model.safetensors), plus the tokenizer;
  `PeftModel.from_pretrained(base, DIR)` loads it.
- merged: base + adapter merged into plain weights (`merge_and_unload`), saved with the tokenizer, so
  `AutoModelForCausalLM.from_pretrained(DIR)` loads it without peft.
- gguf: `base.gguf` (the embedded Gemma's own Q4_K_M file, or a local Gemma 3 converted to float32) and, for a
  fine-tuned model, `adapter.gguf` (GGUF LoRA): `llama-cli -m base.gguf --lora adapter.gguf`, or
  `Llama(model_path="base.gguf", lora_path="adapter.gguf")`.
Every format writes a README.txt saying how to load it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tunehouse.config import Settings

FORMATS = ("peft", "merged", "gguf")


def export_model(settings: Settings, base_model: str, adapter_dir: Path | None, fmt: str, out: Path,
                 model_id: str | None = None) -> list[Path]:
    """Write the export into `out` (created; must be empty or absent). Returns the files written."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format '{fmt}': use one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; choose a new directory")
    if fmt == "peft" and adapter_dir is None:
        raise ValueError(f"'{model_id or base_model}' is a base model: it has no adapter to export as peft")
    out.mkdir(parents=True, exist_ok=True)
    name = model_id or base_model
    if fmt == "peft":
        files = _export_peft(settings, base_model, Path(adapter_dir), out)
        how = ("from peft import PeftModel\nbase = AutoModelForCausalLM.from_pretrained(<the base model>)\n"
               f"model = PeftModel.from_pretrained(base, '{out}')")
    elif fmt == "merged":
        files = _export_merged(settings, base_model, adapter_dir, out)
        how = f"from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained('{out}')"
    else:
        files = _export_gguf(settings, base_model, adapter_dir, out)
        lora = f", lora_path='{out / 'adapter.gguf'}'" if adapter_dir is not None else ""
        how = f"from llama_cpp import Llama\nllm = Llama(model_path='{out / 'base.gguf'}'{lora})"
    readme = out / "README.txt"
    readme.write_text(f"{name} exported by tunehouse as {fmt} (base model: {base_model}).\n\n{how}\n\n"
                      "Chat format: the Gemma turn format the model was trained with "
                      "(<start_of_turn>user ... <end_of_turn> <start_of_turn>model).\n", encoding="utf-8")
    return [*files, readme]


def _tokenizer(settings: Settings, base_model: str):
    from tunehouse.base_models import load_tokenizer

    return load_tokenizer(settings, base_model)


def _export_peft(settings: Settings, base_model: str, adapter_dir: Path, out: Path) -> list[Path]:
    files = []
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        src = adapter_dir / name
        if not src.is_file():
            raise FileNotFoundError(f"{adapter_dir} is not a PEFT adapter directory (no {name})")
        files.append(Path(shutil.copy2(src, out / name)))
    _tokenizer(settings, base_model).save_pretrained(out)
    return files


def _export_merged(settings: Settings, base_model: str, adapter_dir: Path | None, out: Path) -> list[Path]:
    import torch

    from tunehouse.base_models import load_base_model

    model, tokenizer, _ = load_base_model(settings, base_model, device=torch.device("cpu"), dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sorted(out.glob("*.safetensors")) + [out / "config.json"]


def _export_gguf(settings: Settings, base_model: str, adapter_dir: Path | None, out: Path) -> list[Path]:
    from tunehouse.inference.engine_llamacpp import base_gguf, lora_gguf

    files = [Path(shutil.copy2(base_gguf(settings, base_model), out / "base.gguf"))]
    if adapter_dir is not None:
        files.append(Path(shutil.copy2(lora_gguf(settings, adapter_dir), out / "adapter.gguf")))
    (out / "tunehouse_export.json").write_text(json.dumps({"base_model": base_model, "format": "gguf"}),
                                               encoding="utf-8")
    return files
