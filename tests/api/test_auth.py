"""Bearer keys, projects, single-user mode and the refusal to serve other machines without keys."""

from __future__ import annotations

import subprocess
import sys

import httpx2
import openai
import pytest

from tests.api.live import LiveServer, SchemaLog, check_response, make_data_dir, sdk_client


def test_no_key_is_401_with_openai_error(keyed_server):
    r = httpx2.get(f"{keyed_server.base_url}/files")
    assert r.status_code == 401 and check_response("GET", "/v1/files", 401, r.content) == []
    assert "API key" in r.json()["error"]["message"]


def test_invalid_key_is_401_invalid_api_key(keyed_server, schema_log):
    bad = sdk_client(keyed_server, schema_log, "key-wrong")
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.body["code"] == "invalid_api_key" and "key-wrong" not in e.value.body["message"]


def test_keys_file_keys_work_and_revocation_takes_effect(keyed_server, schema_log):
    from tunehouse.config import Settings
    from tunehouse.store.keys import create_key, list_keys, revoke_key

    settings = Settings(data_dir=keyed_server.data_dir)
    key = create_key(settings, "gamma", "ci")
    gamma = sdk_client(keyed_server, schema_log, key)
    assert gamma.models.list().data
    revoke_key(settings, next(k["id"] for k in list_keys(settings) if k["project"] == "gamma"))
    with pytest.raises(openai.AuthenticationError):
        gamma.models.list()


def test_keys_cli_create_list_revoke(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-c", "from tunehouse.cli import app; app()", "keys", *args,
                               "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)

    created = run("create", "--project", "proj1", "--name", "laptop")
    assert created.returncode == 0
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("th-") and all(key.encode() not in f.read_bytes() for f in tmp_path.glob("tunehouse.db*"))
    listed = run("list")
    assert "proj1" in listed.stdout and "laptop" in listed.stdout
    key_id = next(w for w in listed.stdout.split() if w.startswith("key_"))
    assert run("revoke", key_id).returncode == 0
    assert run("revoke", key_id).returncode == 1


def test_single_user_mode_accepts_any_key_on_loopback(tmp_path, tiny_model_dir):
    server = LiveServer(make_data_dir(tmp_path, tiny_model_dir)).start()
    try:
        log = SchemaLog()
        for key in ("anything", "sk-other"):
            assert sdk_client(server, log, key).models.list().data
        assert log.problems == []
        assert "SINGLE-USER MODE" in server.log.read_text()
    finally:
        server.stop()


def test_serve_refuses_a_public_address_without_keys(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from tunehouse.cli import app; app()", "serve", "--host", "0.0.0.0",
                        "--port", "1", "--data-dir", str(tmp_path), "--no-worker"],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 2 and "Refusing to bind 0.0.0.0" in r.stderr.replace("\n", " ")
