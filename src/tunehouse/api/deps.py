"""FastAPI dependencies: settings, one database connection per request (SQLite, or borrowed from the
PostgreSQL pool), and the caller's project (auth).

Use them as annotated types in route signatures: `def route(db: SessionDep, project: ProjectDep): ...`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request

from tunehouse.api.errors import APIError
from tunehouse.config import Settings
from tunehouse.store import keys
from tunehouse.store.db import Connection, connect


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Connection]:
    conn = connect(settings)
    try:
        yield conn
    finally:
        conn.close()


SessionDep = Annotated[Connection, Depends(get_session)]


def is_loopback(host: str | None) -> bool:
    if host in ("localhost", "testclient"):
        return True
    try:
        return ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False


def get_project(request: Request, settings: SettingsDep, db: SessionDep,
                authorization: Annotated[str | None, Header()] = None) -> str:
    """The project of the Bearer key; single-user mode (no keys configured) serves loopback callers only.

    Keys are looked up on the request's own connection (FastAPI gives every dependency of a request the same
    one): taking a second pooled connection while holding the first deadlocks once the pool is full.
    """
    if not keys.keys_configured(settings, db):
        client = request.client.host if request.client else None
        if not is_loopback(client):
            raise APIError(403, "This tunehouse server has no API keys configured and serves only loopback"
                           " clients. Create a key with `tunehouse keys create`.", code="loopback_only")
        return keys.DEFAULT_PROJECT
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise APIError(401, "You didn't provide an API key. You need to provide your API key in an Authorization"
                       " header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                       headers={"WWW-Authenticate": "Bearer"})
    project = keys.project_for_key(settings, token, db)
    if project is None:
        shown = token[:3] + "*" * max(len(token) - 7, 0) + token[-4:] if len(token) > 8 else "***"
        raise APIError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
    return project


ProjectDep = Annotated[str, Depends(get_project)]
