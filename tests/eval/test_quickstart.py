"""The quickstart: its shipped dataset is the documented split, and the command runs the whole loop."""

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.tiny import FIXTURES
from tunehouse.eval import quickstart as qs
from tunehouse.eval.comparison import EvalOptions, load_examples

SPLIT_SCRIPT = Path(qs.__file__).parents[1] / "resources" / "quickstart" / "make_split.py"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_shipped_split_is_reproduced_by_its_script(tmp_path):
    spec = importlib.util.spec_from_file_location("make_split", SPLIT_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train, held_out = module.split(_rows(FIXTURES / "identity_chat.jsonl"))
    shipped_train, shipped_held = qs.copy_dataset(tmp_path)
    assert _rows(shipped_train) == train and _rows(shipped_held) == held_out
    assert (len(train), len(held_out)) == (72, 19)


def test_held_out_questions_are_unseen_and_name_the_identity(tmp_path):
    train, held_out = qs.copy_dataset(tmp_path)
    seen = {r["messages"][0]["content"] for r in _rows(train)}
    examples = load_examples(held_out)
    assert all(e.messages[-1]["content"] not in seen for e in examples)
    assert all("Gemma-FT" in e.patterns and all(p in e.reference for p in e.patterns) for e in examples)


def test_quickstart_runs_the_loop_end_to_end(settings, monkeypatch):
    """Plumbing only, on the tiny model (the real run on Gemma is by hand: it takes minutes)."""
    from tunehouse.cli import app

    monkeypatch.setattr(qs, "BASE_MODEL", "tiny-gemma")
    monkeypatch.setattr(qs, "HYPERPARAMETERS", {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 1.0})
    monkeypatch.setattr(qs, "EVAL_OPTIONS", EvalOptions(max_tokens=2, score_loss=False))
    monkeypatch.setattr("tunehouse.cli.eval._prepare_base", lambda settings: None)
    result = CliRunner().invoke(app, ["quickstart", "--data-dir", str(settings.data_dir)])
    # A random tiny model cannot learn the identity in one epoch: the verdict is FAIL, exit code 1.
    assert result.exit_code == 1, result.output
    assert "Validated train.jsonl: 72 examples" in result.output
    assert "FAIL" in result.output and "expected patterns" in result.output
    assert "tunehouse chat ft:tiny-gemma:" in result.output
    report = json.loads((settings.data_dir / "quickstart" / "report" / "report.json").read_text())
    assert report["n"] == 19 and report["model_id"].startswith("ft:tiny-gemma:")
    assert report["job"]["trained_tokens"] > 0
    assert (settings.data_dir / "quickstart" / "report" / "loss_curve.png").is_file()


@pytest.mark.parametrize("model_rate, base_rate, ok", [(0.9, 0.0, True), (0.6, 0.2, False)])
def test_verdict_needs_fifty_points(model_rate, base_rate, ok):
    class R:
        def summary(self):
            return {"model": {qs.METRIC: model_rate}, "baseline": {qs.METRIC: base_rate}}

    assert qs.verdict(R())[0] is ok
