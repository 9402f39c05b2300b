"""Catalog of base models: the embedded default plus local Hugging Face directories the user added.

Pure bookkeeping (names -> where the weights are), no torch, so the API can list and check base models
without importing the training stack. Loading lives in tunehouse.base_models.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tunehouse.config import Settings

EMBEDDED_GEMMA = "gemma-3-270m"
# Model ids are unix timestamps in OpenAI's Model object; ours are stable per name.
_EMBEDDED_CREATED = 1754524800  # 2025-08-07, Gemma 3 270M release


@dataclass(frozen=True)
class BaseModelEntry:
    name: str
    source: str  # "embedded" | "local"
    family: str  # chat-template family when the tokenizer has none: "gemma" | "chatml"
    path: str | None  # local HF directory; None for the embedded GGUF (converted on first use)
    created: int


class UnknownModelError(LookupError):
    def __init__(self, name: str, available: list[str]):
        self.name, self.available = name, available
        super().__init__(f"Unknown base model '{name}'. Available: {', '.join(available) or 'none'}")


def _registry_file(settings: Settings) -> Path:
    return settings.data_dir / "base_models.json"


def _read_local(settings: Settings) -> dict[str, dict]:
    path = _registry_file(settings)
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_local(settings: Settings, entries: dict[str, dict]) -> None:
    path = _registry_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write-then-rename so a crash never leaves a half-written registry.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".base_models.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=2)
    os.replace(tmp, path)


def guess_family(name: str, path: str | None = None) -> str:
    text = f"{name} {path or ''}".lower()
    return "gemma" if "gemma" in text else "chatml"


def list_base_models(settings: Settings) -> list[BaseModelEntry]:
    models = [BaseModelEntry(EMBEDDED_GEMMA, "embedded", "gemma", None, _EMBEDDED_CREATED)]
    models += [BaseModelEntry(**e) for e in _read_local(settings).values()]
    return models


def resolve_base_model(settings: Settings, name: str) -> BaseModelEntry:
    """Name or alias -> entry; an unknown name raises UnknownModelError listing what is available."""
    name = settings.model_aliases.get(name, name)
    models = {m.name: m for m in list_base_models(settings)}
    if name not in models:
        raise UnknownModelError(name, sorted(models))
    return models[name]


def add_base_model(settings: Settings, name: str, path: str | Path, family: str | None = None) -> BaseModelEntry:
    import time

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name or ""):
        raise ValueError(f"Invalid model name '{name}': use letters, digits, '-', '_', '.'")
    if name == EMBEDDED_GEMMA:
        raise ValueError(f"'{name}' is the embedded default and cannot be replaced")
    p = Path(path).expanduser().resolve()
    if not (p / "config.json").is_file():
        raise ValueError(f"{p} is not a Hugging Face model directory (no config.json)")
    entry = BaseModelEntry(name, "local", family or guess_family(name, str(p)), str(p), int(time.time()))
    entries = _read_local(settings)
    entries[name] = asdict(entry)
    _write_local(settings, entries)
    return entry


def remove_base_model(settings: Settings, name: str) -> None:
    entries = _read_local(settings)
    if name not in entries:
        raise UnknownModelError(name, sorted(entries))
    del entries[name]
    _write_local(settings, entries)
