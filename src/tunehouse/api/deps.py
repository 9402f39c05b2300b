"""FastAPI dependencies: settings, one database connection per request (SQLite, or borrowed from the
PostgreSQL pool), and the caller's project (auth).

Use them as annotated types in route signatures: `def route(db: SessionDep, project: ProjectDep): ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool

from tunehouse.api.errors import APIError
from tunehouse.config import Settings
from tunehouse.store import keys
from tunehouse.store.db import POOL_MAX_SIZE, Connection, connect

REQUEST_CONNECTIONS = POOL_MAX_SIZE - 4


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_session(request: Request, settings: SettingsDep) -> AsyncIterator[Connection]:
    """The request's connection, borrowed so that a full PostgreSQL pool can never deadlock the server.

    Requests run on a pool of worker threads. Had they waited for a connection on those threads, more requests
    than pooled connections would fill every thread with waiters while the connections' holders need a thread
    to finish. So requests first wait, on the event loop, for one of `REQUEST_CONNECTIONS` slots (fewer than
    the pool holds: background validations and inference lookups borrow too), then borrow on a thread at once,
    and give the connection back on the event loop (putconn / sqlite3's close: quick, no waiting).
    """
    slots = _connection_slots(request, settings)
    async with slots if slots is not None else contextlib.nullcontext():
        conn = await run_in_threadpool(connect, settings)
        try:
            yield conn
        finally:
            conn.close()


def _connection_slots(request: Request, settings: Settings) -> asyncio.Semaphore | None:
    """The app's limit on requests holding a pooled connection (PostgreSQL only; SQLite never waits)."""
    if settings.db_path is not None:
        return None
    slots = getattr(request.app.state, "connection_slots", None)
    if slots is None:
        slots = request.app.state.connection_slots = asyncio.Semaphore(REQUEST_CONNECTIONS)
    return slots


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
