"""Report files: report.json matches the summary, report.md holds the table and failures, PNG charts exist."""

import json

from rich.console import Console

from tests.eval.fake_api import FakeAPI
from tunehouse.eval.comparison import evaluate
from tunehouse.eval.openai_backend import OpenAIBackend
from tunehouse.eval.report import comparison_table, failures_table, fmt, fmt_delta, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _result(tmp_path, loss_curve=None):
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in [("a?", "A"), ("b?", "B"), ("c?", "C")]]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    api = FakeAPI({"ft:m": {"a?": "A", "b?": "B", "c?": "wrong"}, "m": {"a?": "A"}}, completions=False)
    result = evaluate(OpenAIBackend(api.client()), "ft:m", "m", path)
    result.loss_curve = loss_curve
    return result


def test_report_files_are_written(tmp_path):
    curve = [{"step": 1.0, "train_loss": 2.0, "valid_loss": None}, {"step": 2.0, "train_loss": 1.0, "valid_loss": 1.2}]
    paths = write_report(_result(tmp_path, curve), tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["n"] == 3 and round(data["model"]["exact_match"], 3) == 0.667
    assert len(data["examples"]) == 3 and data["examples"][2]["model"]["answer"] == "wrong"
    md = paths["md"].read_text()
    assert "| exact match | 33.3% | 66.7% | +33.3 pts |" in md
    assert "`wrong`" in md and "![metrics](metrics.png)" in md
    assert paths["metrics"].read_bytes().startswith(PNG)
    assert paths["loss_curve"].read_bytes().startswith(PNG)


def test_no_loss_curve_chart_without_a_job(tmp_path):
    paths = write_report(_result(tmp_path), tmp_path / "out")
    assert "loss_curve" not in paths and not (tmp_path / "out" / "loss_curve.png").exists()


def test_tables_show_both_models_and_the_failures(tmp_path):
    result = _result(tmp_path)
    console = Console(record=True, width=200)
    console.print(comparison_table(result))
    console.print(failures_table(result))
    text = console.export_text()
    assert "exact match" in text and "33.3%" in text and "66.7%" in text and "+33.3 pts" in text
    assert "wrong" in text and "c?" in text
    assert "| reference loss" not in text and "│ reference loss" not in text  # n/a for both models: no row...
    # ...but the reason is shown under the table (wrapped to its width)
    assert "reference loss n/a for ft:m: the server answered 400 echo is not supported to /v1/completions" in \
        " ".join(text.split())


def test_markdown_report_says_why_loss_is_na(tmp_path):
    md = write_report(_result(tmp_path), tmp_path / "out")["md"].read_text()
    assert ("Note: reference loss n/a for m: the server answered 400 echo is not supported to /v1/completions with "
            "echo and logprobs") in md


def test_formatting_of_missing_and_rate_values():
    assert fmt("exact_match", None) == "n/a"
    assert fmt("exact_match", 0.5) == "50.0%"
    assert fmt_delta("exact_match", 0.9, 0.1) == "+80.0 pts"
    assert fmt_delta("loss", None, 1.0) == ""


def test_loss_chart_and_report_mark_the_lowest_full_validation_loss(tmp_path):
    from tunehouse.eval.report import best_validation

    curve = [{"step": 1.0, "train_loss": 2.0, "full_valid_loss": None},
             {"step": 2.0, "train_loss": 1.0, "valid_loss": 1.3, "full_valid_loss": 1.2},
             {"step": 3.0, "train_loss": 0.5, "full_valid_loss": 1.1},
             {"step": 4.0, "train_loss": 0.2, "full_valid_loss": 1.4}]
    assert best_validation(curve) == (3, 1.1)
    assert best_validation([{"step": 1.0, "train_loss": 2.0, "valid_loss": 1.0}]) is None  # no full pass: no mark
    paths = write_report(_result(tmp_path, curve), tmp_path / "out")
    assert paths["loss_curve"].read_bytes().startswith(PNG)
    assert "Lowest full validation loss: 1.1000 at step 3" in paths["md"].read_text()
