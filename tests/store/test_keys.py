"""API keys: env syntax, hashed keys in the database (either dialect), projects, revocation, the old file."""

from __future__ import annotations

import json

import pytest

from tunehouse.config import Settings
from tunehouse.store import db, keys


def test_env_keys_accept_project_prefix_plain_and_json():
    assert keys.parse_env_keys("a:k1, k2") == {"k1": "a", "k2": "default"}
    assert keys.parse_env_keys('["b:k3"]') == {"k3": "b"}
    assert keys.parse_env_keys("") == {}


def test_bad_env_entry_is_a_clear_error():
    with pytest.raises(ValueError, match="project:key"):
        keys.parse_env_keys(":k")


def test_env_key_maps_to_its_project(tmp_path):
    s = Settings(data_dir=tmp_path, api_keys="alpha:secret")
    assert keys.keys_configured(s)
    assert keys.project_for_key(s, "secret") == "alpha" and keys.project_for_key(s, "nope") is None


def test_no_keys_means_single_user_mode(tmp_path):
    assert not keys.keys_configured(Settings(data_dir=tmp_path))


def _stored_text(settings) -> str:
    conn = db.connect(settings)
    try:
        return repr([tuple(r) for r in conn.execute("SELECT * FROM api_keys").fetchall()])
    finally:
        conn.close()


def test_keys_are_stored_hashed_in_the_database_and_revocable(settings):
    s = settings
    key = keys.create_key(s, "beta", "laptop")
    assert key not in _stored_text(s) and keys.project_for_key(s, key) == "beta"
    assert not keys.legacy_keys_file(s).exists()
    (entry,) = keys.list_keys(s)
    assert entry["project"] == "beta" and key.startswith(entry["prefix"])
    keys.revoke_key(s, entry["id"])
    assert keys.project_for_key(s, key) is None and not keys.keys_configured(s)
    with pytest.raises(KeyError):
        keys.revoke_key(s, entry["id"])


def test_a_key_made_for_one_server_works_on_another_with_the_same_database(settings, tmp_path):
    key = keys.create_key(settings, "gamma")
    other_machine = settings.model_copy(update={"data_dir": tmp_path / "other-machine",
                                                "database_url": settings.db_url})
    assert keys.project_for_key(other_machine, key) == "gamma"


def test_an_older_data_dirs_keys_file_is_imported_once(settings):
    legacy = {"keys": [{"id": "key_old", "project": "delta", "name": "n", "prefix": "th-abcd",
                        "sha256": keys.key_hash("th-abcdef"), "created_at": 1}]}
    keys.legacy_keys_file(settings).write_text(json.dumps(legacy), encoding="utf-8")
    assert keys.project_for_key(settings, "th-abcdef") == "delta"
    assert not keys.legacy_keys_file(settings).exists()
    assert [k["id"] for k in keys.list_keys(settings)] == ["key_old"]


def test_project_names_cannot_break_the_env_syntax(tmp_path):
    with pytest.raises(ValueError):
        keys.create_key(Settings(data_dir=tmp_path), "a:b")
