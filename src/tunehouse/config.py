"""One Settings object, read from TUNEHOUSE_* environment variables; built in entry points and passed down."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEHOUSE_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".tunehouse")
    host: str = "127.0.0.1"
    port: int = 8000
    # Client side (CLI): the server to talk to.
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    # Server side: comma-separated keys, or a JSON list; each key belongs to project "default" unless given
    # as "project:key". Empty means single-user mode (loopback only, any key accepted).
    api_keys: str = ""
    max_upload_bytes: int = 512 * 1024 * 1024
    # Org segment of fine-tuned model ids: ft:{base}:{org}:{suffix}:{8 chars}.
    org: str = "tunehouse"
    # Accept other names for local bases, e.g. {"gpt-4o-mini-2024-07-18": "gemma-3-270m"}. JSON in the env.
    model_aliases: dict[str, str] = Field(default_factory=dict)
    default_base_model: str = "gemma-3-270m"
    device: str = "auto"  # auto | cpu | cuda
    keep_checkpoints: int = 3
    worker_poll_seconds: float = 1.0
    heartbeat_seconds: float = 5.0
    # A running job whose worker has not beaten its heart for this long is re-queued.
    stale_after_seconds: float = 60.0
    # Inference: auto (llama.cpp when installed and the base has a GGUF, else transformers) | llamacpp | hf.
    engine: str = "auto"
    max_loaded_adapters: int = 8  # LRU bound on LoRA adapters kept loaded on each base
    max_queued_requests: int = 16  # generation requests running or waiting; more get 429
    inference_context: int = 4096  # tokens (prompt + completion) per request
    # llama.cpp threads; 0 = auto: every core, or half of them while other work keeps the CPU busy (its thread
    # barriers stall under oversubscription: 1.6 tok/s with 2 threads vs 14.5 with 1 on a loaded 2-core machine).
    inference_threads: int = 0
    # Base weights llama.cpp serves, re-encoded once under models_dir/gguf: original (the embedded Q4_K_M file,
    # or the exact f32 conversion of a local model) | q8_0 | f16 | f16-q8head | f32-q8head | f32. f16: greedy
    # decodes match the reference engine's (the Q4_K_M file's 8-bit activations flip near-ties) at ~4x HF's
    # decode speed; figures for each in docs/inference.md.
    inference_precision: Literal["original", "q8_0", "f16", "f16-q8head", "f32-q8head", "f32"] = "f16"
    # A job with a validation file ends with its model evaluated against the base on up to this many of the
    # validation examples (event + report.json result file); 0 turns that off.
    job_eval_examples: int = 100

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, v: object) -> object:
        return Path(v).expanduser() if isinstance(v, str | Path) else v

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _aliases(cls, v: object) -> object:
        return json.loads(v) if isinstance(v, str) else v

    @property
    def db_path(self) -> Path:
        return self.data_dir / "tunehouse.db"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def models_dir(self) -> Path:
        """Base-model caches (e.g. the Gemma GGUF converted to safetensors)."""
        return self.data_dir / "models"
