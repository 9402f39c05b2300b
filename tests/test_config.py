"""Settings: bad values fail at startup with the allowed list; every field is described and in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from tunehouse.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("engine", "vllm", "'auto', 'llamacpp' or 'hf'"),
    ("device", "tpu", "'auto', 'cpu' or 'cuda'"),
    ("inference_precision", "q4", "'original'"),
    ("train_precision", "fp8", "'auto', 'fp32' or 'bf16'"),
    ("database_url", "mysql://u@h/db", "sqlite:///PATH or postgresql://"),
    ("train_processes", "two", "auto or a whole number"),
    ("train_processes", "0", "auto or a whole number"),
])
def test_a_bad_value_fails_with_the_accepted_forms(monkeypatch, field, value, expected):
    monkeypatch.setenv(f"TUNEHOUSE_{field.upper()}", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert field in str(info.value) and expected in str(info.value)


def test_the_database_and_blobs_default_to_the_data_dir(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.db_path == tmp_path / "tunehouse.db" and s.blobs_dir == tmp_path / "files"
    pg = Settings(data_dir=tmp_path, database_url="postgresql://u@h/db", blob_dir=tmp_path / "share")
    assert pg.db_path is None and pg.jobs_dir == tmp_path / "share" / "jobs"


def test_every_field_has_a_description():
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


def test_the_readme_configuration_table_lists_every_field():
    listed = set(re.findall(r"^\| `TUNEHOUSE_([A-Z_]+)`", README.read_text(encoding="utf-8"), re.MULTILINE))
    assert {name.upper() for name in Settings.model_fields} - listed == set()
