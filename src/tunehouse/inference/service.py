"""The inference service: which engine serves a base model, one loaded engine per base, admission and locking.

Engine choice is explicit and logged (Settings.engine / TUNEHOUSE_ENGINE = auto | llamacpp | hf):
- llamacpp: llama.cpp on the GGUF base (the embedded Gemma's own Q4_K_M file, or a local Gemma 3 converted once)
  with adapters converted to GGUF LoRA. ~5x faster decoding than transformers on CPU.
- hf: transformers + peft, the reference (exact fp32 math of training; also what CUDA machines use).
- auto: llamacpp when llama-cpp-python is installed, there is no CUDA GPU and the base converts; otherwise hf,
  and an adapter llama.cpp cannot represent exactly is served by hf; each such decision is logged with its reason.

Requests are admitted up to Settings.max_queued_requests (running + waiting; more raise QueueFull -> 429). Each
engine owns its decoding (batching.BatchScheduler): up to Settings.inference_slots sequences decode together
in one batch per adapter, the others wait for a slot; a request never touches an engine's KV cache or active
adapter itself, so no service-wide lock is needed.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path

from tunehouse.config import Settings
from tunehouse.inference.gguf_convert import ConversionError

log = logging.getLogger("tunehouse.inference")
ENGINES = ("auto", "llamacpp", "hf")


class QueueFull(RuntimeError):
    """Too many generation requests are running or waiting."""


class EngineUnavailable(RuntimeError):
    """The configured engine cannot run here (e.g. TUNEHOUSE_ENGINE=llamacpp without llama-cpp-python)."""


def choose_engine(settings: Settings, base_model: str) -> tuple[str, str]:
    """(engine name, reason) for a base model under the configured preference."""
    from tunehouse.inference.engine_llamacpp import llama_cpp_available

    pref = settings.engine
    if pref not in ENGINES:
        raise EngineUnavailable(f"Unknown engine '{pref}': set TUNEHOUSE_ENGINE to one of {', '.join(ENGINES)}")
    if pref == "hf":
        return "hf", "TUNEHOUSE_ENGINE=hf"
    available = llama_cpp_available()
    if pref == "llamacpp":
        if not available:
            raise EngineUnavailable("TUNEHOUSE_ENGINE=llamacpp but llama-cpp-python is not installed "
                                    "(pip install llama-cpp-python, or set TUNEHOUSE_ENGINE=hf)")
        return "llamacpp", "TUNEHOUSE_ENGINE=llamacpp"
    if not available:
        return "hf", "llama-cpp-python is not installed"
    if settings.device != "cpu" and _cuda():
        return "hf", "a CUDA GPU is available"
    reason = _gguf_blocker(settings, base_model)
    return ("hf", reason) if reason else ("llamacpp", "llama-cpp-python installed and the base has a GGUF")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _gguf_blocker(settings: Settings, base_model: str) -> str | None:
    """Why a base cannot run on llama.cpp, or None when it can."""
    import json

    from tunehouse.catalog import resolve_base_model
    from tunehouse.inference.gguf_convert import check_gemma3_config

    entry = resolve_base_model(settings, base_model)
    if entry.source == "embedded":
        return None
    path = Path(entry.path or "")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        check_gemma3_config(config.get("text_config", config) | {"model_type": config.get("model_type")})
        tokenizer = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        if (tokenizer.get("model") or {}).get("type") != "BPE":
            return "its tokenizer is not byte-level BPE (no GGUF conversion)"
    except (OSError, ValueError) as e:
        return f"no GGUF conversion: {e}"
    return None


class InferenceService:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._engines: dict[tuple[str, str], object] = {}
        self._loading = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, settings.max_queued_requests))
        self.base_loads: Counter[tuple[str, str]] = Counter()

    # -- admission -----------------------------------------------------------------------------------------
    def admit(self) -> Ticket:
        """A slot for one request, or QueueFull. Release it (Ticket.release) when the request is done."""
        if not self._slots.acquire(blocking=False):
            raise QueueFull(f"Too many requests: {self.settings.max_queued_requests} are already running or "
                            "waiting. Retry shortly.")
        return Ticket(self._slots)

    # -- engines -------------------------------------------------------------------------------------------
    def engine(self, base_model: str, adapter_dir: Path | None = None):
        """The loaded engine that serves (base_model, adapter_dir), loading the base on first use."""
        name, reason = choose_engine(self.settings, base_model)
        if name == "llamacpp" and adapter_dir is not None:
            problem = self._adapter_blocker(adapter_dir)
            if problem and self.settings.engine != "auto":
                raise EngineUnavailable(f"The adapter of this model cannot run on llama.cpp: {problem}. Set "
                                        "TUNEHOUSE_ENGINE=auto (or hf) to serve it with transformers.")
            if problem:
                log.warning("engine=hf for adapter %s: %s", adapter_dir, problem)
                name, reason = "hf", problem
        return self._get(base_model, name, reason)

    def _adapter_blocker(self, adapter_dir: Path) -> str | None:
        from tunehouse.inference.engine_llamacpp import lora_gguf

        try:
            lora_gguf(self.settings, adapter_dir)
        except ConversionError as e:
            return f"llama.cpp cannot represent it exactly ({e})"
        except FileNotFoundError as e:
            return str(e)
        return None

    def _get(self, base_model: str, name: str, reason: str):
        key = (base_model, name)
        with self._loading:
            if key not in self._engines:
                # warning level: which engine serves a model must show in the server log, never be silent
                log.warning("engine=%s for base %s (%s)", name, base_model, reason)
                self._engines[key] = self._load(base_model, name)
                self.base_loads[key] += 1
            return self._engines[key]

    def _load(self, base_model: str, name: str):
        if name == "hf":
            from tunehouse.inference.engine_hf import HFEngine

            return HFEngine(self.settings, base_model)
        from tunehouse.inference.engine_llamacpp import LlamaCppEngine

        return LlamaCppEngine(self.settings, base_model)


class Ticket:
    """One admitted request; release() is idempotent so both the handler and a stream's cleanup may call it."""

    def __init__(self, slots: threading.BoundedSemaphore):
        self._slots, self._done = slots, False
        self._mutex = threading.Lock()

    def release(self) -> None:
        with self._mutex:
            if not self._done:
                self._done = True
                self._slots.release()

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # a stream the client abandoned before it started still frees its slot
        self.release()
