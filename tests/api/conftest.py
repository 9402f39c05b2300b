"""Fixtures for the API tests: a live keyed server (two projects) and SDK clients checking every response."""

from __future__ import annotations

import openai
import pytest

from tests.api.live import LiveServer, SchemaLog, make_data_dir, sdk_client


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, tiny_model_dir):
    """API only (no worker), two projects with one key each."""
    root = tmp_path_factory.mktemp("api")
    server = LiveServer(make_data_dir(root, tiny_model_dir),
                        env={"TUNEHOUSE_API_KEYS": "alpha:key-alpha,beta:key-beta",
                             "TUNEHOUSE_MAX_UPLOAD_BYTES": "200000"}).start()
    yield server
    server.stop()


@pytest.fixture
def schema_log():
    log = SchemaLog()
    yield log
    assert log.problems == [], "responses that do not match OpenAI's schemas:\n" + "\n".join(log.problems)


@pytest.fixture
def client(keyed_server, schema_log) -> openai.OpenAI:
    return sdk_client(keyed_server, schema_log, "key-alpha")


@pytest.fixture
def other_client(keyed_server, schema_log) -> openai.OpenAI:
    return sdk_client(keyed_server, schema_log, "key-beta")


