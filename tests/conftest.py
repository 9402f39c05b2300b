"""Shared fixtures: a tiny offline model registered in a temporary data dir, and paths to fixtures."""

from __future__ import annotations

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
