"""Shared fixtures: a tiny offline model registered in a temporary data dir, paths to fixtures, and a throwaway
PostgreSQL server with a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiny import FIXTURES, build_tiny_model

TINY = "tiny-gemma"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gemma"))


@pytest.fixture
def settings(tmp_path, tiny_model_dir):
    """Settings on a fresh data dir with the tiny model registered as base model 'tiny-gemma'."""
    from tunehouse.catalog import add_base_model
    from tunehouse.config import Settings

    s = Settings(data_dir=tmp_path / "data", default_base_model=TINY)
    add_base_model(s, TINY, tiny_model_dir, family="gemma")
    return s


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL cluster for the whole session (tests/pg.py); fails, never skips, without one."""
    from tests import pg
    from tunehouse.store.db import close_pools

    try:
        cluster = pg.start_cluster()
    except pg.PostgresNotFound as e:
        pytest.fail(str(e), pytrace=False)
    yield cluster
    close_pools()
    cluster.stop()


_databases = itertools.count()


@pytest.fixture
def pg_database_url(pg_server) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's cluster; this process's pools close afterwards."""
    from tests import pg
    from tunehouse.store.db import close_pools

    yield pg.create_database(pg_server.url, f"test_{next(_databases)}")
    close_pools()
