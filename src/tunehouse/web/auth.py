"""Who is looking at the dashboard: sign-in sessions, the single-user loopback rule, and CSRF checks.

With API keys configured, a visitor signs in once with a key; the server records a session (the key's hash) and
gives the browser only a random session id in an HTTP-only, SameSite=Lax cookie. Every request re-checks the
key through store.keys (a revoked key ends its sessions at once) and sees only that key's project. Without keys
(single-user mode) the dashboard, like the API, answers loopback clients only.

State-changing requests (POST) need the session's CSRF token (a hidden form field or the X-CSRF-Token header)
and, when the browser sends an Origin header, an Origin equal to this server's. Sessions live in the database
(hashes only), so every API server behind a load balancer honours them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from tunehouse.api.deps import SessionDep, is_loopback
from tunehouse.store import keys, web_sessions
from tunehouse.store.db import Connection

COOKIE = "tunehouse_session"
SESSION_SECONDS = 12 * 3600


class SignInRequired(Exception):
    """Keys are configured and the visitor has no valid session: show the sign-in page."""


class Forbidden(Exception):
    """Refused outright (a non-loopback client in single-user mode, a failed CSRF check)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Viewer:
    project: str
    csrf: str
    signed_in: bool  # False in single-user mode (no key, nothing to sign out of)


class Sessions:
    """Sign-in sessions in the database (store/web_sessions.py): any API server on it knows every session.

    Methods take the request's connection (one per request: a second pooled one could deadlock a full pool).
    """

    def __init__(self):
        self._csrf_key: bytes | None = None

    def create(self, conn: Connection, key: str) -> str:
        sid, _ = web_sessions.create_session(conn, keys.key_hash(key), SESSION_SECONDS)
        return sid

    def get(self, conn: Connection, sid: str | None) -> tuple[str, str] | None:
        """(key_sha256, csrf) of the live session `sid`, or None."""
        return web_sessions.find_session(conn, sid) if sid else None

    def drop(self, conn: Connection, sid: str | None) -> None:
        if sid:
            web_sessions.drop_session(conn, sid)

    def single_user_csrf(self, conn: Connection) -> str:
        """Unguessable for another site, the same on every server of this database."""
        if self._csrf_key is None:
            self._csrf_key = web_sessions.server_secret(conn, "dashboard-csrf").encode()
        return hmac.new(self._csrf_key, b"single-user", hashlib.sha256).hexdigest()


def sessions_of(request: Request) -> Sessions:
    return request.app.state.web_sessions


def get_viewer(request: Request, db: SessionDep) -> Viewer:
    """The visitor's project, or SignInRequired / Forbidden (turned into pages by the web error handlers)."""
    settings = request.app.state.settings
    sessions = sessions_of(request)
    if not keys.keys_configured(settings, db):
        if not is_loopback(request.client.host if request.client else None):
            raise Forbidden("This tunehouse server has no API keys configured and serves only loopback clients. "
                            "Create a key with `tunehouse keys create`.")
        return Viewer(keys.DEFAULT_PROJECT, sessions.single_user_csrf(db), signed_in=False)
    session = sessions.get(db, request.cookies.get(COOKIE))
    project = keys.project_for_key_hash(settings, session[0], db) if session else None
    if project is None:
        raise SignInRequired()
    return Viewer(project, session[1], signed_in=True)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


def check_origin(request: Request) -> None:
    """A browser's cross-site POST carries the attacker's Origin: refuse any Origin that is not ours."""
    origin = request.headers.get("origin")
    if origin is None:
        return  # old browsers and non-browser clients; the CSRF token still has to match
    expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin != expected:
        raise Forbidden(f"Cross-site request refused (Origin {origin} is not {expected}).")


def check_csrf(request: Request, viewer: Viewer, token: str | None) -> None:
    check_origin(request)
    if not token or not hmac.compare_digest(token, viewer.csrf):
        raise Forbidden("The form's security token is missing or stale; reload the page and try again.")


def safe_next(target: str | None) -> str:
    """Only same-site paths as the post-sign-in redirect (no `//evil.example` or absolute URLs)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"
