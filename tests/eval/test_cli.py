"""`tunehouse eval` input handling: bad options and bad test data end in one clear line, never a traceback."""

import json

import pytest
from typer.testing import CliRunner

from tunehouse.cli import app
from tunehouse.cli.eval import default_baseline, parse_metrics


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, ["eval", *args, "--data-dir", str(tmp_path / "data")])

    return invoke


@pytest.fixture
def test_file(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "yo"}]}) + "\n")
    return path


def test_baseline_defaults_to_the_base_of_an_ft_model():
    assert default_baseline("ft:gemma-3-270m:tunehouse:demo:abcd1234") == "gemma-3-270m"
    assert default_baseline("ft:gemma-3-270m:tunehouse:demo:abcd1234:ckpt-step-3") == "gemma-3-270m"
    assert default_baseline("gpt-4o-mini") is None


def test_metrics_option_accepts_known_names_only():
    assert parse_metrics(None) == {"loss", "auto-json"}
    assert parse_metrics("json, exact_match") == {"json", "exact_match"}
    with pytest.raises(Exception, match="unknown metric"):
        parse_metrics("bleu")


def test_missing_baseline_for_a_non_ft_model_is_a_clear_error(run, test_file):
    result = run("--model", "gpt-4o-mini", "--test", str(test_file))
    assert result.exit_code == 1 and "--baseline is required" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_bad_test_file_is_reported_with_its_line(run, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    result = run("--model", "a", "--baseline", "b", "--test", str(bad))
    assert result.exit_code == 1 and "line 1" in result.output and "Traceback" not in result.output


def test_invalid_schema_file_is_a_clear_error(run, test_file, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": 5}')
    result = run("--model", "a", "--baseline", "b", "--test", str(test_file), "--schema", str(schema))
    assert result.exit_code == 1 and "invalid JSON schema" in result.output


def test_unreachable_server_is_a_clear_error(run, test_file):
    result = run("--model", "a", "--baseline", "b", "--test", str(test_file), "--base-url", "http://127.0.0.1:9/v1")
    assert result.exit_code == 1 and "cannot reach the server" in result.output


def test_eval_against_the_in_process_server_prints_json_and_writes_reports(settings, tmp_path):
    """The real path: tunehouse API in this process, tiny model, chat completions and echo/logprobs scoring."""
    from tests.tiny import FIXTURES

    test = tmp_path / "identity.jsonl"
    test.write_text("\n".join((FIXTURES / "identity_chat.jsonl").read_text().splitlines()[:2]) + "\n")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-gemma", "--baseline", "tiny-gemma", "--test", str(test),
                                      "--max-tokens", "2", "--json", "--out", str(out),
                                      "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert set(summary) == {"model", "baseline", "n"} and summary["n"] == 2  # "notes" only when a metric is n/a
    assert summary["model"]["exact_match"] == 0.0 and summary["model"]["completion_tokens"] <= 2
    # The same model twice: identical greedy answers and reference losses (near ln(vocab) for a random model).
    assert summary["model"]["loss"] == pytest.approx(summary["baseline"]["loss"], rel=1e-4)
    assert summary["model"]["loss"] > 3
    assert (out / "report.md").is_file() and (out / "report.json").is_file() and (out / "metrics.png").is_file()


def test_schema_or_json_metric_on_preference_pairs_is_a_clear_error(run, tmp_path):
    from tests.tiny import FIXTURES

    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object"}')
    pairs = str(FIXTURES / "identity_pairs_heldout.jsonl")
    for extra in (["--schema", str(schema)], ["--metrics", "json"]):
        result = run("--model", "a", "--baseline", "b", "--test", pairs, *extra)
        assert result.exit_code == 1 and "preference pairs, which are scored, not answered" in result.output


def test_a_file_mixing_chats_and_pairs_names_the_line(run, tmp_path, test_file):
    from tests.tiny import FIXTURES

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text((FIXTURES / "identity_pairs_heldout.jsonl").read_text().splitlines()[0] + "\n"
                     + test_file.read_text())
    result = run("--model", "a", "--baseline", "b", "--test", str(mixed))
    assert result.exit_code == 1 and "line 2: a chat example in a file of preference pairs" in result.output


def test_eval_on_preference_pairs_against_the_in_process_server(settings, tmp_path):
    """The real path for pairs: echo/logprobs scoring on the server equals scoring in this process."""
    from tests.tiny import FIXTURES
    from tunehouse.eval.job_eval import InProcessBackend

    test = tmp_path / "pairs.jsonl"
    test.write_text("\n".join((FIXTURES / "identity_pairs_heldout.jsonl").read_text().splitlines()[:3]) + "\n")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-gemma", "--baseline", "tiny-gemma", "--test", str(test),
                                      "--json", "--out", str(out), "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert set(summary) == {"model", "baseline", "n"} and summary["n"] == 3
    acc, margin = summary["model"]["preference_accuracy"], summary["model"]["preference_margin"]
    assert acc in (0.0, 1 / 3, 2 / 3, 1.0) and margin is not None and summary["model"]["exact_match"] is None
    assert summary["baseline"]["preference_margin"] == pytest.approx(margin, rel=1e-4)  # the same model twice
    report = json.loads((out / "report.json").read_text())
    assert "preference accuracy" in (out / "report.md").read_text()
    backend = InProcessBackend(settings, {"tiny-gemma": ("tiny-gemma", None)})
    for row in report["examples"]:
        for side in ("preferred", "non_preferred"):
            nll, n = backend.score("tiny-gemma", row["prompt"], row[side], "auto")
            assert row["model"][f"logp_{side}"] == pytest.approx(-nll, rel=1e-3, abs=1e-2)
            assert row["model"][f"{side}_tokens"] == n
