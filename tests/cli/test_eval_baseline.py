"""`tunehouse eval --baseline-base-url`: the baseline answers on a second server (an old OpenAI `ft:` model vs its
tunehouse replacement), the model on --base-url."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY
from tests.migration.live import make_settings
from tunehouse.cli.local_server import local_server


def test_baseline_is_served_by_the_other_server(cli, tmp_path, tiny_model_dir, fixtures_dir):
    test = fixtures_dir / "identity_chat.jsonl"
    here = make_settings(tmp_path / "here", tiny_model_dir)
    there = make_settings(tmp_path / "there", tiny_model_dir, names=("old-model",))
    with local_server(here) as url, local_server(there) as other:
        args = ["eval", "--model", TINY, "--baseline", "old-model", "--test", str(test), "-n", "2",
                "--base-url", url, "--out", str(tmp_path / "r")]
        alone = cli(*args, "--json")
        both = cli(*args, "--baseline-base-url", other, "--baseline-api-key", "k", "--json")
    # Only the second server has old-model: without the option the baseline is looked up on --base-url.
    assert alone.exit_code == 1 and f"model 'old-model' not found on {url}" in alone.stderr
    assert both.exit_code == 0, both.stderr
    summary = json.loads(both.stdout)
    assert summary["n"] == 2 and summary["baseline"]["exact_match"] is not None
    # The same weights under another name on another server: scored in the model's chat format (the id
    # "old-model" says nothing about it), the two losses are the same number.
    assert summary["baseline"]["loss"] == pytest.approx(summary["model"]["loss"], rel=1e-4)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["baseline_id"] == "old-model" and len(report["examples"]) == 2
