"""`tunehouse validate` / `tunehouse split` through typer's CliRunner: exit codes, report, --json schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from tests.data.conftest import good_chats
from tunehouse.cli import app

DOC = Path(__file__).resolve().parents[2] / "docs" / "validate.md"
EXPECTED = {2: "data_type", 3: "missing_messages_list", 4: "message_missing_key", 5: "message_unrecognized_key",
            6: "unrecognized_role", 7: "missing_content", 8: "example_missing_assistant_message", 9: "invalid_json",
            10: "not_utf8", 11: "mixed_formats", 12: "invalid_weight", 13: "invalid_tool_call"}
runner = CliRunner()


@pytest.fixture(scope="module")
def schema() -> dict:
    """The --json schema exactly as documented in docs/validate.md (so the doc cannot drift from the output)."""
    block = re.search(r"## `--json` schema.*?```json\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    return json.loads(block.group(1))


def _json(args: list[str]) -> tuple[int, dict]:
    result = runner.invoke(app, ["validate", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_trainable_file_exits_0_with_a_readable_report(write_jsonl):
    result = runner.invoke(app, ["validate", str(write_jsonl(good_chats(12)))])
    assert result.exit_code == 0, result.output
    assert "12 examples" in result.output and "Estimates" in result.output and "trainable" in result.output


def test_one_example_of_each_error_kind_reports_each_key_at_its_line(fixtures_dir, schema):
    code, out = _json([str(fixtures_dir / "one_error_each.jsonl")])
    assert code == 1 and out["ok"] is False
    assert {e["line"]: e["code"] for e in out["errors"]} == EXPECTED
    jsonschema.validate(out, schema)


def test_rich_report_groups_problems_by_code_with_line_numbers(fixtures_dir):
    result = runner.invoke(app, ["validate", str(fixtures_dir / "one_error_each.jsonl")])
    assert result.exit_code == 1
    for line, code in EXPECTED.items():
        assert re.search(rf"{code}\s.*\b{line}\b", result.output), code


def test_json_output_with_validation_file_matches_the_documented_schema(fixtures_dir, schema):
    code, out = _json([str(fixtures_dir / "identity_chat.jsonl"), "--validation-file",
                       str(fixtures_dir / "wikisql_sample.jsonl")])
    assert code == 0 and out["ok"] is True
    jsonschema.validate(out, schema)
    assert out["validation"]["examples"] == 40 and out["validation"]["estimate"] is None
    assert out["estimate"]["n_epochs"] == 3 and out["tokens_are_estimates"] is True


def test_cookbook_toy_file_exits_1_for_too_few_examples_only(fixtures_dir, schema):
    code, out = _json([str(fixtures_dir / "cookbook_toy_chat.jsonl")])
    assert code == 1 and [e["code"] for e in out["errors"]] == ["too_few_examples"]
    assert out["estimate"]["n_epochs"] == 20
    jsonschema.validate(out, schema)


def test_missing_file_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.jsonl")])
    # Rich wraps to the terminal width (a long tmp path wraps in CI), so compare with whitespace folded.
    assert result.exit_code == 2 and "no such file" in " ".join(result.output.split())


def test_missing_validation_file_is_a_usage_error(write_jsonl, tmp_path):
    result = runner.invoke(app, ["validate", str(write_jsonl(good_chats(10))), "--validation-file",
                                 str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2


def test_unknown_model_is_a_usage_error(write_jsonl, settings, monkeypatch):
    monkeypatch.setenv("TUNEHOUSE_DATA_DIR", str(settings.data_dir))
    result = runner.invoke(app, ["validate", str(write_jsonl(good_chats(10))), "--model", "no-such-model"])
    assert result.exit_code == 2 and "Unknown base model" in result.output


def test_model_option_counts_with_the_real_tokenizer(write_jsonl, settings, monkeypatch):
    monkeypatch.setenv("TUNEHOUSE_DATA_DIR", str(settings.data_dir))
    path = str(write_jsonl(good_chats(10)))
    code, exact = _json([path, "--model", "tiny-gemma"])
    assert code == 0 and exact["tokens_are_estimates"] is False
    assert exact["stats"]["tokens_counted_with"] == "tokenizer"
    _, estimated = _json([path])
    assert exact["stats"]["total_tokens"] != estimated["stats"]["total_tokens"]


def test_binary_file_gives_a_clear_error_not_a_traceback(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 64)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
    assert "binary" in result.output


def test_split_command_writes_both_files(fixtures_dir, tmp_path):
    result = runner.invoke(app, ["split", str(fixtures_dir / "identity_chat.jsonl"), "--valid-fraction", "0.2",
                                 "--seed", "3", "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    train, valid = (tmp_path / "out" / "train.jsonl"), (tmp_path / "out" / "valid.jsonl")
    assert len(train.read_bytes().splitlines()) == 73 and len(valid.read_bytes().splitlines()) == 18


def test_split_command_rejects_a_bad_fraction(fixtures_dir, tmp_path):
    result = runner.invoke(app, ["split", str(fixtures_dir / "identity_chat.jsonl"), "--valid-fraction", "1.5",
                                 "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "between 0 and 1" in result.output


def test_n_epochs_past_the_auto_rule_warns_overfit_risk(write_jsonl, schema):
    path = str(write_jsonl(good_chats(50)))
    code, out = _json([path, "--n-epochs", "5"])
    assert code == 0 and out["warning_counts"] == {"overfit_risk": 1} and out["estimate"]["n_epochs"] == 5
    jsonschema.validate(out, schema)
    result = runner.invoke(app, ["validate", path, "--n-epochs", "5"])
    assert "overfit_risk" in result.output and "epochs (--n-epochs): 5" in result.output


def test_auto_estimate_announces_the_holdout_of_a_large_file(write_jsonl, schema):
    path = str(write_jsonl(good_chats(400)))
    code, out = _json([path])
    assert code == 0 and (out["estimate"]["early_stopping"], out["estimate"]["holdout_examples"]) == (True, 20)
    jsonschema.validate(out, schema)
    result = runner.invoke(app, ["validate", path])
    assert "at most 3" in result.output and "20 training examples held out" in result.output
