"""The seed workflow of test_workflow.py, every one of its tests, with the store on PostgreSQL: `tunehouse serve`
and its worker child get TUNEHOUSE_DATABASE_URL, and no SQLite file may appear in the data dir."""

from __future__ import annotations

import pytest

from tests import pg
from tests.api.live import LiveServer, make_data_dir

# The workflow's tests and fixtures, collected here again; only `server` (below) differs.
from tests.api.test_workflow import *  # noqa: F403
from tests.api.test_workflow import SERVER_ENV


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, pg_server):
    root = tmp_path_factory.mktemp("workflow-postgres")
    url = pg.create_database(pg_server.url, "workflow")
    srv = LiveServer(make_data_dir(root, tiny_model_dir), worker=True, env=SERVER_ENV, database_url=url).start()
    yield srv
    srv.stop()


def test_the_store_lives_in_postgresql_not_in_the_data_dir(server, finished):
    assert finished.status == "succeeded", finished.error
    assert server.settings().db_path is None
    assert sorted(p.name for p in server.data_dir.rglob("*.db*")) == []  # no tunehouse.db, -wal or -shm
