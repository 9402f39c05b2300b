"""Dashboard sign-in sessions, in the database so that every API server behind a load balancer knows them.

A row holds hashes only: of the cookie's session id and of the API key signed in with; the browser keeps the
session id. server_secret() gives a random value made once per database, shared by all servers (the
single-user dashboard's CSRF key).
"""

from __future__ import annotations

import hashlib
import secrets
import time

from tunehouse.store.db import Connection


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def create_session(conn: Connection, key_sha256: str, lifetime_seconds: float) -> tuple[str, str]:
    """A new session for the key with this hash; returns (session id for the cookie, CSRF token)."""
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    conn.execute("DELETE FROM web_sessions WHERE expires_at < ?", (time.time(),))
    conn.execute("INSERT INTO web_sessions (id_sha256, key_sha256, csrf, expires_at) VALUES (?, ?, ?, ?)",
                 (_sha(sid), key_sha256, csrf, time.time() + lifetime_seconds))
    return sid, csrf


def find_session(conn: Connection, sid: str) -> tuple[str, str] | None:
    """(key_sha256, csrf) of a live session, or None (unknown or expired)."""
    row = conn.execute("SELECT key_sha256, csrf FROM web_sessions WHERE id_sha256 = ? AND expires_at > ?",
                       (_sha(sid), time.time())).fetchone()
    return (row["key_sha256"], row["csrf"]) if row else None


def drop_session(conn: Connection, sid: str) -> None:
    conn.execute("DELETE FROM web_sessions WHERE id_sha256 = ?", (_sha(sid),))


def server_secret(conn: Connection, name: str) -> str:
    """A random secret made once per database (the first server to ask creates it)."""
    conn.execute("INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                 (name, secrets.token_hex(32)))
    return conn.execute("SELECT value FROM server_secrets WHERE name = ?", (name,)).fetchone()["value"]
