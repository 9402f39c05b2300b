"""Every store test that opens the database runs twice: on SQLite (the data dir's file) and on PostgreSQL (a
fresh database on the session's throwaway cluster)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str | None:
    """None = the data dir's SQLite file; else a fresh PostgreSQL database's URL."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_database_url")


@pytest.fixture
def settings(settings, database_url):
    """The shared tiny-model settings (tests/conftest.py) on this test's database."""
    return settings.model_copy(update={"database_url": database_url})
