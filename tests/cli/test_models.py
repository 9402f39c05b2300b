"""`tunehouse models add/remove/list --local`: the local base-model catalog, path validation, no server needed."""

from __future__ import annotations

import json
import shutil

import pytest

from tunehouse.catalog import list_base_models
from tunehouse.config import Settings


def _catalog(tmp_path) -> dict:
    return {m.name: m for m in list_base_models(Settings(data_dir=tmp_path / "cli-data"))}


def test_add_registers_a_hf_causal_lm_dir(cli, tmp_path, tiny_model_dir):
    result = cli("models", "add", "my-tiny", str(tiny_model_dir), "--family", "gemma")
    assert result.exit_code == 0, result.stderr
    entry = _catalog(tmp_path)["my-tiny"]
    assert (entry.source, entry.family, entry.path) == ("local", "gemma", str(tiny_model_dir.resolve()))


def test_list_local_shows_embedded_and_added_base_models(cli, tiny_model_dir):
    cli("models", "add", "my-tiny", str(tiny_model_dir))
    names = [m["name"] for m in json.loads(cli("models", "list", "--local", "--json").stdout)]
    assert names == ["gemma-3-270m", "my-tiny"]
    assert "my-tiny" in cli("models", "list", "--local").stdout


def test_add_refuses_to_replace_without_force(cli, tiny_model_dir):
    assert cli("models", "add", "my-tiny", str(tiny_model_dir)).exit_code == 0
    again = cli("models", "add", "my-tiny", str(tiny_model_dir))
    assert again.exit_code == 1 and "--force" in again.stderr
    assert cli("models", "add", "my-tiny", str(tiny_model_dir), "--force").exit_code == 0


def _copy_without(src, dst, *drop):
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d / "missing", "no such directory"),
        (lambda d: d / "config.json", "is a file"),
        (lambda d: _copy_without(d, d.parent / "noconf", "config.json"), "no config.json"),
        (lambda d: _copy_without(d, d.parent / "noweights", "model.safetensors"), "no weights"),
        (lambda d: _copy_without(d, d.parent / "notok", "tokenizer.json", "tokenizer_config.json"), "no tokenizer"),
    ],
    ids=["missing", "file", "no-config", "no-weights", "no-tokenizer"],
)
def test_add_rejects_what_is_not_a_causal_lm_dir(cli, tmp_path, tiny_model_dir, mutate, message):
    src = shutil.copytree(tiny_model_dir, tmp_path / "src" / "model")
    result = cli("models", "add", "bad", str(mutate(src)))
    assert result.exit_code == 1 and message in result.stderr
    assert "bad" not in _catalog(tmp_path)


def test_add_rejects_a_non_causal_architecture(cli, tmp_path, tiny_model_dir):
    d = shutil.copytree(tiny_model_dir, tmp_path / "cls")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(config | {"architectures": ["BertForSequenceClassification"]}))
    result = cli("models", "add", "bad", str(d))
    assert result.exit_code == 1 and "not a causal language model" in result.stderr


def test_add_rejects_a_bad_name_and_the_embedded_name(cli, tiny_model_dir):
    assert "Invalid model name" in cli("models", "add", "no spaces", str(tiny_model_dir)).stderr
    assert "embedded default" in cli("models", "add", "gemma-3-270m", str(tiny_model_dir)).stderr


def test_remove_drops_an_added_model_and_explains_unknown_names(cli, tmp_path, tiny_model_dir):
    cli("models", "add", "my-tiny", str(tiny_model_dir))
    assert cli("models", "remove", "my-tiny").exit_code == 0
    assert "my-tiny" not in _catalog(tmp_path)
    result = cli("models", "remove", "my-tiny")
    assert result.exit_code == 1 and "not a base model added" in result.stderr
