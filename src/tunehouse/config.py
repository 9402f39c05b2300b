"""One Settings object, read from TUNEHOUSE_* environment variables; built in entry points and passed down.

Entry points (the CLI commands, `python -m tunehouse.worker`) build it once; everything below takes it as an
argument and never reads the environment itself. A bad value fails at startup with the allowed values.
The README's configuration table lists every field (a test keeps the two in step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
Engine = Literal["auto", "llamacpp", "hf"]
Device = Literal["auto", "cpu", "cuda"]
TrainPrecision = Literal["auto", "fp32", "bf16"]
InferencePrecision = Literal["original", "q8_0", "f16", "f16-q8head", "f32-q8head", "f32"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEHOUSE_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".tunehouse", description=(
        "SQLite database (unless `TUNEHOUSE_DATABASE_URL` says otherwise), blobs (unless `TUNEHOUSE_BLOB_DIR`) and "
        "model caches"))
    database_url: str | None = Field(None, description=(
        "`sqlite:///PATH` or `postgresql://user:pass@host:port/db`; unset = `sqlite:///{data_dir}/tunehouse.db`"))
    blob_dir: Path | None = Field(None, description=(
        "Uploaded files, adapters, checkpoints and results; a shared filesystem when several machines serve or "
        "train; unset = the data dir"))
    host: str = Field("127.0.0.1", description="Address `tunehouse serve` binds")
    port: int = Field(8000, description="Port `tunehouse serve` binds")
    base_url: str | None = Field(None, description=(
        f"Server the CLI's client commands talk to; unset = `{DEFAULT_BASE_URL}` (for `chat` and `eval`: a server "
        "started inside the command)"))
    api_key: str | None = Field(None, description="API key the CLI sends")
    api_keys: str = Field("", description=(
        "Server keys: `project:key,...` or a JSON list (a key without project is in `default`); empty = "
        "single-user mode (loopback only, any key accepted)"))
    max_upload_bytes: int = Field(512 * 1024 * 1024, description="Larger uploads get 413")
    org: str = Field("tunehouse", description="Org segment of fine-tuned model ids: `ft:{base}:{org}:{suffix}:{id}`")
    model_aliases: dict[str, str] = Field(default_factory=dict, description=(
        'JSON: other names for local bases, e.g. `{"gpt-4o-mini-2024-07-18": "gemma-3-270m"}`'))
    default_base_model: str = Field("gemma-3-270m", description=(
        "Base model `tunehouse validate` counts tokens with when no `--model` is given"))
    device: Device = Field("auto", description="Training device: `auto` (CUDA with bf16 when present, else CPU fp32),"
                           " `cpu`, `cuda`")
    train_precision: TrainPrecision = Field("auto", description=(
        "Base weights during training: `auto` (bf16 on CUDA and on CPUs with AMX, else fp32), `fp32`, or "
        "`bf16` (on CPUs with AMX-BF16 much faster, held-out loss within 1% in benchmarks/train_throughput.py; "
        "slow on CPUs without it). The LoRA weights and the loss stay fp32"))
    keep_checkpoints: int = Field(3, description="Epoch checkpoints kept per job (newest)")
    worker_poll_seconds: float = Field(1.0, description="How often an idle worker looks for queued jobs")
    heartbeat_seconds: float = Field(5.0, description="How often a busy worker renews its job's heartbeat")
    stale_after_seconds: float = Field(60.0, description=(
        "A running job whose worker has not beaten its heart for this long is re-queued"))
    engine: Engine = Field("auto", description=(
        "Inference engine: `auto` (llama.cpp when installed and the base has a GGUF, else transformers), "
        "`llamacpp`, `hf`"))
    max_loaded_adapters: int = Field(8, description="LoRA adapters kept loaded per base (least recently used go)")
    max_queued_requests: int = Field(16, description="Generation requests running or waiting; more get 429")
    inference_context: int = Field(4096, description="Tokens (prompt + completion) per request")
    inference_slots: int = Field(8, ge=1, le=64, description="Sequences the fast engine decodes together "
                                 "(continuous batching; on CUDA the reference engine too)")
    # 0 = every core, or half of them while other work keeps the CPU busy: llama.cpp's thread barriers stall
    # under oversubscription (docs/inference.md).
    inference_threads: int = Field(0, description="llama.cpp threads; 0 = auto")
    # f16: greedy decodes match the reference engine's (the Q4_K_M file's 8-bit activations flip near-ties);
    # figures for each choice in docs/inference.md.
    inference_precision: InferencePrecision = Field("f16", description=(
        "Base weights llama.cpp serves, re-encoded once: `original` (the embedded Q4_K_M), `q8_0`, `f16`, "
        "`f16-q8head`, `f32-q8head`, `f32`"))
    train_processes: str = Field("auto", description=(
        "Training processes per job: `auto` (the number of CUDA devices, else 1) or N; more than 1 runs the job "
        "under torchrun (NCCL on CUDA, gloo on CPU)"))
    train_nnodes: int = Field(1, ge=1, description=(
        "Machines per training job; more than 1 needs `TUNEHOUSE_TRAIN_RDZV_ENDPOINT` and the other machines "
        "running torchrun (docs/training.md)"))
    train_rdzv_endpoint: str = Field("", description=(
        "`HOST:PORT` of the torchrun rendezvous for multi-machine jobs: this worker's machine, reachable from the "
        "others"))
    train_max_restarts: int = Field(1, ge=0, description=(
        "When a training process crashes, torchrun restarts all of them this many times (they resume from the "
        "last saved state) before the job fails"))
    job_eval_examples: int = Field(100, description=(
        "Validation examples a job's final evaluation answers (event + report); 0 = no evaluation"))

    @field_validator("data_dir", "blob_dir", mode="before")
    @classmethod
    def _expand(cls, v: object) -> object:
        if v == "":
            return None
        return Path(v).expanduser() if isinstance(v, str | Path) else v

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, v: object) -> object:
        if v in (None, ""):
            return None
        if not isinstance(v, str) or not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("use sqlite:///PATH or postgresql://user:pass@host:port/db")
        return v

    @field_validator("train_processes", mode="before")
    @classmethod
    def _train_processes(cls, v: object) -> object:
        text = str(v).strip().lower()
        if text != "auto" and not (text.isdigit() and int(text) >= 1):
            raise ValueError("use auto or a whole number >= 1")
        return text

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _aliases(cls, v: object) -> object:
        return json.loads(v) if isinstance(v, str) else v

    @property
    def db_url(self) -> str:
        """The database in use: TUNEHOUSE_DATABASE_URL, or the data dir's SQLite file."""
        return self.database_url or f"sqlite:///{self.data_dir / 'tunehouse.db'}"

    @property
    def db_path(self) -> Path | None:
        """The SQLite file, or None when the database is PostgreSQL."""
        url = self.db_url
        return Path(url.removeprefix("sqlite:///")).expanduser() if url.startswith("sqlite:///") else None

    @property
    def blob_root(self) -> Path:
        return self.blob_dir or self.data_dir

    @property
    def blobs_dir(self) -> Path:
        return self.blob_root / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.blob_root / "jobs"

    @property
    def models_dir(self) -> Path:
        """Base-model caches (e.g. the Gemma GGUF converted to safetensors)."""
        return self.data_dir / "models"
