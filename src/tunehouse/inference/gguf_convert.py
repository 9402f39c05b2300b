"""GGUF files for llama.cpp: PEFT LoRA adapters -> GGUF LoRA, local Gemma 3 HF directories -> GGUF bases, and
GGUF bases re-encoded at another precision (BASE_PRECISIONS, chosen by Settings.inference_precision).

LoRA mapping (verified against peft in tests/inference/test_engines.py on a float32 base, where llama.cpp and
peft give the same logits): peft's `...layers.N.self_attn.q_proj.lora_A.weight` [r, in] becomes
`blk.N.attn_q.weight.lora_a` and `lora_B` [out, r] becomes `.lora_b`, both in PyTorch layout. llama.cpp scales
the product by `adapter.lora.alpha / r` (r read from each tensor), which is peft's `lora_alpha / r`; where peft
scales differently (rsLoRA's alpha/sqrt(r), per-module rank/alpha patterns) the difference is folded into
lora_b so the math stays exact. Gemma 3 needs no Q/K permutation: llama.cpp runs it with NEOX-style RoPE,
the same half-split rotation as transformers (the permutation in llama.cpp's converter is for LLaMA only).

Base conversion follows llama.cpp's Gemma3Model converter: norm weights get +1 (Gemma's RMSNorm multiplies by
1 + w), the LM head is tied to the embedding, and only models llama.cpp would run identically are accepted.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

ARCH = "gemma3"
_LORA_KEY = re.compile(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_MODULES = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
}
_NORMS = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
}


class ConversionError(ValueError):
    """This adapter or model cannot be represented exactly in GGUF for llama.cpp."""


def _peft_scaling(cfg: dict, module_key: str, r: int) -> float:
    """peft's scaling for one module: lora_alpha / r (or / sqrt(r) with rsLoRA), honouring per-module patterns."""
    alpha = cfg.get("lora_alpha", 8)
    for pattern, value in (cfg.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module_key):
            alpha = value
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def _commit(writer, tmp: Path, out_path: Path) -> Path:
    """Write the GGUF to its temporary name, then rename it into place: readers never see half a file."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_path)
    return out_path


def write_lora_gguf(adapter_dir: str | Path, out_path: str | Path) -> Path:
    """Write a PEFT LoRA adapter directory as a llama.cpp GGUF LoRA adapter; refuses what would not be exact."""
    from safetensors.numpy import load_file

    adapter_dir, out_path = Path(adapter_dir), Path(out_path)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ConversionError(f"Only LoRA adapters convert to GGUF, not {cfg.get('peft_type')}")
    for flag in ("use_dora", "lora_bias"):
        if cfg.get(flag):
            raise ConversionError(f"Adapters with {flag}=true have no llama.cpp equivalent")
    if cfg.get("modules_to_save"):
        raise ConversionError("Adapters with modules_to_save (fully trained modules) have no GGUF LoRA form")
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = _LORA_KEY.search(key)
        if m is None or m.group(3) not in _MODULES:
            raise ConversionError(f"Adapter tensor '{key}' has no llama.cpp Gemma 3 counterpart")
        layer, _, module, ab = m.groups()
        name = f"blk.{layer}.{_MODULES[module]}.weight"
        pairs.setdefault(name, {"module": key.split(".lora_")[0]})[ab] = value.astype(np.float32)
    if not pairs:
        raise ConversionError(f"{adapter_dir} holds no LoRA tensors")
    alpha = float(cfg.get("lora_alpha", 8))
    import gguf

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name in sorted(pairs):
        p = pairs[name]
        if "A" not in p or "B" not in p:
            raise ConversionError(f"{name}: lora_A or lora_B is missing")
        a, b = p["A"], p["B"]
        r = a.shape[0]
        # llama.cpp applies alpha / r; fold any other peft scaling into B so the product is identical.
        fold = _peft_scaling(cfg, p["module"], r) / (alpha / r)
        if not math.isclose(fold, 1.0):
            b = b * np.float32(fold)
        writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a))
        writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b))
    return _commit(writer, tmp, out_path)


def check_gemma3_config(config: dict) -> None:
    """Refuse Gemma 3 configs llama.cpp would compute differently (it hard-codes some of Gemma's choices)."""
    if config.get("model_type") not in ("gemma3_text", "gemma3"):
        raise ConversionError(f"GGUF conversion supports Gemma 3 text models, not '{config.get('model_type')}'")
    head_dim = config.get("head_dim", 256)
    if config.get("query_pre_attn_scalar", head_dim) != head_dim:
        raise ConversionError("llama.cpp scales attention by 1/sqrt(head_dim); this model's query_pre_attn_scalar "
                              "differs, so its GGUF would not compute the same outputs")
    layer_types = config.get("layer_types") or []
    expected = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(len(layer_types))]
    if layer_types and layer_types != expected:
        raise ConversionError("llama.cpp expects Gemma 3's 5-sliding/1-global layer pattern")
    if config.get("rope_scaling") or (config.get("rope_parameters") or {}).get("rope_type", "default") != "default":
        raise ConversionError("RoPE scaling is not supported in the GGUF conversion")


def _rope_thetas(config: dict) -> tuple[float, float]:
    params = config.get("rope_parameters") or {}
    full = (params.get("full_attention") or params).get("rope_theta", config.get("rope_theta", 1_000_000.0))
    local = (params.get("sliding_attention") or {}).get("rope_theta", config.get("rope_local_base_freq", 10_000.0))
    return float(full), float(local)


def _add_bpe_vocab(writer, model_dir: Path) -> int:
    """GPT-2-style byte-level BPE vocabulary from tokenizer.json (the only kind converted here)."""
    import gguf

    tj = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise ConversionError("GGUF base conversion supports byte-level BPE tokenizers; the embedded Gemma is "
                              "already GGUF")
    vocab = dict(model["vocab"])
    special = {t["id"]: t for t in tj.get("added_tokens", [])}
    for tid, t in special.items():
        vocab[t["content"]] = tid
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [gguf.TokenType.UNUSED] * n
    for text, tid in vocab.items():
        tokens[tid] = text
        types[tid] = gguf.TokenType.NORMAL
    for tid, t in special.items():
        types[tid] = gguf.TokenType.CONTROL if t.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    ids = {t: i for t, i in vocab.items()}
    for key, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                     ("pad_token", writer.add_pad_token_id), ("unk_token", writer.add_unk_token_id)):
        tok = cfg.get(key)
        tok = tok.get("content") if isinstance(tok, dict) else tok
        if tok in ids:
            add(ids[tok])
    writer.add_add_bos_token(False)  # tunehouse tokenizes itself; the rendered prompt carries its own <bos>
    return n


def write_base_gguf(model_dir: str | Path, out_path: str | Path) -> Path:
    """Convert a local Gemma 3 HF directory (float32 GGUF, exact) for llama.cpp."""
    import gguf
    from safetensors.numpy import load_file

    model_dir, out_path = Path(model_dir), Path(out_path)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config = config.get("text_config", config) | {"model_type": config.get("model_type")}
    check_gemma3_config(config)
    weights: dict[str, np.ndarray] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    if not weights:
        raise ConversionError(f"{model_dir} has no safetensors weights")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), ARCH)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(model_dir.name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    head_dim = config.get("head_dim", 256)
    full_theta, local_theta = _rope_thetas(config)
    w.add_context_length(config.get("max_position_embeddings", 131072))
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config["num_key_value_heads"])
    w.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(full_theta)
    w.add_rope_freq_base_swa(local_theta)
    w.add_sliding_window(config["sliding_window"])
    if config.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(config["final_logit_softcapping"])
    n_vocab = _add_bpe_vocab(w, model_dir)
    for name, value in _gguf_tensors(weights, n_vocab):
        w.add_tensor(name, np.ascontiguousarray(value.astype(np.float32)))
    return _commit(w, tmp, out_path)


def _gguf_tensors(weights: dict[str, np.ndarray], n_vocab: int):
    for key, value in weights.items():
        name = key.removeprefix("model.language_model.").removeprefix("model.")
        if name == "embed_tokens.weight":
            yield "token_embd.weight", value[:n_vocab]
        elif name == "norm.weight":
            yield "output_norm.weight", value + 1.0
        elif key == "lm_head.weight":
            continue  # tied to the embedding (Gemma 3 always ties them)
        else:
            m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
            if m is None:
                raise ConversionError(f"Unexpected tensor '{key}'")
            layer, rest = m.groups()
            module = rest.split(".")[-1]
            if rest in _NORMS:
                yield f"blk.{layer}.{_NORMS[rest]}.weight", value + 1.0
            elif module in _MODULES:
                yield f"blk.{layer}.{_MODULES[module]}.weight", value
            else:
                raise ConversionError(f"Unexpected tensor '{key}'")


# Base GGUF precisions for the fast engine: name -> GGML type of (block matrices, token embedding = tied LM head);
# None keeps the source's types. A tensor already in the wanted type is copied as is (the embedded Gemma's Q8_0
# embedding is not re-rounded). "f32" is exact: llama.cpp then computes the same sums as transformers on the
# dequantized weights; lower types round the weights and, inside llama.cpp's dot products, the activations
# too (to f16 for F16 weights, to 8 bits for quantized ones). Measurements: docs/inference.md.
BASE_PRECISIONS: dict[str, tuple[str | None, str | None]] = {
    "original": (None, None),  # the file as it is (the embedded Q4_K_M; a local model's f32 conversion)
    "q8_0": ("Q8_0", "Q8_0"),
    "f16": ("F16", "F16"),
    "f16-q8head": ("F16", "Q8_0"),
    "f32-q8head": ("F32", "Q8_0"),
    "f32": ("F32", "F32"),
}


def write_precision_gguf(src_path: str | Path, out_path: str | Path, precision: str) -> Path:
    """Re-encode a GGUF base at another precision (see BASE_PRECISIONS), keeping all its metadata and vocabulary.

    Quantized tensors are dequantized exactly (the same numbers transformers loads from this file), then
    stored as F32/F16 or re-quantized; norms and other 1-D tensors stay F32.
    """
    import gguf
    from gguf.quants import dequantize, quantize

    if precision not in BASE_PRECISIONS:
        raise ValueError(f"Unknown GGUF precision '{precision}': use one of {', '.join(BASE_PRECISIONS)}")
    blocks, embedding = BASE_PRECISIONS[precision]
    src_path, out_path = Path(src_path), Path(out_path)
    reader = gguf.GGUFReader(str(src_path))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    file_type = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                 "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}.get(blocks or "")
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE and file_type is not None:
            value = int(file_type)
        vtype = field.types[0]
        writer.add_key_value(field.name, value, vtype,
                             sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
    for t in reader.tensors:
        want = embedding if t.name == "token_embd.weight" else blocks
        qtype = t.tensor_type
        if len(t.shape) < 2 or want is None or gguf.GGMLQuantizationType[want] == qtype:
            writer.add_tensor(t.name, t.data, raw_dtype=qtype)  # as stored: no re-rounding
            continue
        rows = dequantize(t.data, qtype) if qtype != gguf.GGMLQuantizationType.F32 else t.data
        target = gguf.GGMLQuantizationType[want]
        if target == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(t.name, np.ascontiguousarray(rows, dtype=np.float32))
        elif target == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(t.name, np.ascontiguousarray(rows, dtype=np.float16))
        else:
            writer.add_tensor(t.name, quantize(np.ascontiguousarray(rows, dtype=np.float32), target), raw_dtype=target)
    return _commit(writer, tmp, out_path)
