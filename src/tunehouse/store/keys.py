"""API keys -> projects: from TUNEHOUSE_API_KEYS ("project:key,..." or a JSON list) and the database's api_keys.

Keys made by `tunehouse keys create` live in the database (only SHA-256 hashes and a short visible prefix; the
full key is shown once), so every API server on that database knows them and a revocation holds everywhere at
once. A data dir's older api_keys.json is imported on first use and renamed. No keys at all means single-user
mode (project "default").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tunehouse.config import Settings
from tunehouse.store.db import Connection, connect, now, transaction

log = logging.getLogger("tunehouse.store")
DEFAULT_PROJECT = "default"


def legacy_keys_file(settings: Settings) -> Path:
    """Where versions before the database-held keys kept them (imported once, then renamed *.imported)."""
    return settings.data_dir / "api_keys.json"


def key_hash(key: str) -> str:
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


@contextmanager
def _db(settings: Settings, conn: Connection | None) -> Iterator[Connection]:
    """The caller's connection (a request's: never a second one from the pool while holding the first, which
    could deadlock a full pool), or one of our own for the CLI."""
    if conn is not None:
        yield conn
        return
    own = connect(settings)
    try:
        _import_legacy_file(settings, own)
        yield own
    finally:
        own.close()


def _import_legacy_file(settings: Settings, conn: Connection) -> None:
    path = legacy_keys_file(settings)
    if not path.is_file():
        return
    entries = json.loads(path.read_text(encoding="utf-8")).get("keys", [])
    with transaction(conn):
        for e in entries:
            conn.execute("INSERT INTO api_keys (id, project, name, prefix, sha256, created_at) VALUES"
                         " (?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                         (e["id"], e["project"], e.get("name", ""), e["prefix"], e["sha256"], e["created_at"]))
    try:
        path.rename(path.with_name(path.name + ".imported"))
        log.info("imported %d API keys from %s into the database", len(entries), path)
    except FileNotFoundError:
        pass  # another process imported it at the same moment (the inserts above were no-ops then)


def keys_configured(settings: Settings, conn: Connection | None = None) -> bool:
    if parse_env_keys(settings.api_keys):
        return True
    with _db(settings, conn) as db:
        return db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None


def project_for_key(settings: Settings, key: str, conn: Connection | None = None) -> str | None:
    """The project the key belongs to, or None if it is not a valid key."""
    return project_for_key_hash(settings, key_hash(key), conn)


def project_for_key_hash(settings: Settings, digest: str, conn: Connection | None = None) -> str | None:
    """The project of the key with this SHA-256 (dashboard sessions keep only the hash), or None."""
    for known, project in parse_env_keys(settings.api_keys).items():
        if hmac.compare_digest(key_hash(known), digest):
            return project
    with _db(settings, conn) as db:
        row = db.execute("SELECT project FROM api_keys WHERE sha256 = ?", (digest,)).fetchone()
    return row["project"] if row else None


def create_key(settings: Settings, project: str = DEFAULT_PROJECT, name: str = "") -> str:
    if not project or ":" in project or "," in project:
        raise ValueError(f"Invalid project name '{project}'")
    key = "th-" + secrets.token_urlsafe(32)
    with _db(settings, None) as conn:
        conn.execute("INSERT INTO api_keys (id, project, name, prefix, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                     ("key_" + secrets.token_hex(6), project, name, key[:7], key_hash(key), now()))
    return key


def list_keys(settings: Settings) -> list[dict]:
    """Database keys (id, project, name, prefix, created_at) plus env keys (source 'env', masked)."""
    with _db(settings, None) as conn:
        rows = conn.execute("SELECT id, project, name, prefix, created_at FROM api_keys ORDER BY seq").fetchall()
    out = [{k: r[k] for k in ("id", "project", "name", "prefix", "created_at")} | {"source": "database"}
           for r in rows]
    for key, project in parse_env_keys(settings.api_keys).items():
        out.append({"id": "-", "project": project, "name": "", "prefix": key[:4], "created_at": None, "source": "env"})
    return out


def revoke_key(settings: Settings, key_id: str) -> dict:
    """Delete a key; its dashboard sessions end too (they re-check the key on every request)."""
    with _db(settings, None) as conn, transaction(conn):
        row = conn.execute("SELECT id, project, name, prefix FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise KeyError(f"No key with id '{key_id}' (see `tunehouse keys list`)")
        conn.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
    return {k: row[k] for k in ("id", "project", "name", "prefix")}
