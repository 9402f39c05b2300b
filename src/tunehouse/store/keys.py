"""API keys -> projects. From TUNEHOUSE_API_KEYS ("project:key,..." or a JSON list) and the data dir's keys file.

The keys file (api_keys.json, managed by `tunehouse keys`) stores only SHA-256 hashes and a short visible
prefix; the full key is shown once at creation. No keys at all means single-user mode (project "default").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

from tunehouse.config import Settings

DEFAULT_PROJECT = "default"
_cache: dict[Path, tuple[tuple[int, int], dict]] = {}
_lock = threading.Lock()


def keys_file(settings: Settings) -> Path:
    return settings.data_dir / "api_keys.json"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_env_keys(text: str) -> dict[str, str]:
    """'proj:key,key2' or '["proj:key", "key2"]' -> {key: project}; a key without project is in "default"."""
    text = (text or "").strip()
    if not text:
        return {}
    items = json.loads(text) if text.startswith("[") else text.split(",")
    out = {}
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        project, sep, key = item.partition(":")
        if not sep:
            project, key = DEFAULT_PROJECT, item
        if not project or not key:
            raise ValueError(f"Bad API key entry '{item}': use 'project:key' or 'key'")
        out[key] = project
    return out


def _read_file(settings: Settings) -> dict:
    path = keys_file(settings)
    try:
        st = path.stat()
        mtime = (st.st_mtime_ns, st.st_size)  # re-read whenever `tunehouse keys` rewrote the file
    except FileNotFoundError:
        return {"keys": []}
    with _lock:
        cached = _cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
    data = json.loads(path.read_text(encoding="utf-8"))
    with _lock:
        _cache[path] = (mtime, data)
    return data


def _write_file(settings: Settings, data: dict) -> None:
    path = keys_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".api_keys.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def keys_configured(settings: Settings) -> bool:
    return bool(parse_env_keys(settings.api_keys)) or bool(_read_file(settings)["keys"])


def project_for_key(settings: Settings, key: str) -> str | None:
    """The project the key belongs to, or None if it is not a valid key."""
    env = parse_env_keys(settings.api_keys)
    for known, project in env.items():
        if hmac.compare_digest(known, key):
            return project
    digest = _hash(key)
    for entry in _read_file(settings)["keys"]:
        if hmac.compare_digest(entry["sha256"], digest):
            return entry["project"]
    return None


def create_key(settings: Settings, project: str = DEFAULT_PROJECT, name: str = "") -> str:
    if not project or ":" in project or "," in project:
        raise ValueError(f"Invalid project name '{project}'")
    key = "th-" + secrets.token_urlsafe(32)
    data = _read_file(settings)
    entry = {"id": "key_" + secrets.token_hex(6), "project": project, "name": name, "prefix": key[:7],
             "sha256": _hash(key), "created_at": int(time.time())}
    _write_file(settings, {"keys": [*data["keys"], entry]})
    return key


def list_keys(settings: Settings) -> list[dict]:
    """Keys from the file (id, project, name, prefix, created_at) plus env keys (source 'env', masked)."""
    out = [{k: e[k] for k in ("id", "project", "name", "prefix", "created_at")} | {"source": "file"}
           for e in _read_file(settings)["keys"]]
    for key, project in parse_env_keys(settings.api_keys).items():
        out.append({"id": "-", "project": project, "name": "", "prefix": key[:4], "created_at": None, "source": "env"})
    return out


def revoke_key(settings: Settings, key_id: str) -> dict:
    data = _read_file(settings)
    kept = [e for e in data["keys"] if e["id"] != key_id]
    if len(kept) == len(data["keys"]):
        raise KeyError(f"No key with id '{key_id}' in {keys_file(settings)}")
    _write_file(settings, {"keys": kept})
    return next(e for e in data["keys"] if e["id"] == key_id)
