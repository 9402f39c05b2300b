"""API keys: env syntax, the hashed keys file, projects, revocation."""

from __future__ import annotations

import pytest

from tunehouse.config import Settings
from tunehouse.store import keys


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


def test_file_keys_are_stored_hashed_and_revocable(tmp_path):
    s = Settings(data_dir=tmp_path)
    key = keys.create_key(s, "beta", "laptop")
    assert key not in keys.keys_file(s).read_text() and keys.project_for_key(s, key) == "beta"
    (entry,) = keys.list_keys(s)
    assert entry["project"] == "beta" and key.startswith(entry["prefix"])
    keys.revoke_key(s, entry["id"])
    assert keys.project_for_key(s, key) is None and not keys.keys_configured(s)
    with pytest.raises(KeyError):
        keys.revoke_key(s, entry["id"])


def test_project_names_cannot_break_the_env_syntax(tmp_path):
    with pytest.raises(ValueError):
        keys.create_key(Settings(data_dir=tmp_path), "a:b")
