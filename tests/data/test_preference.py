"""Preference (DPO) files: one test per pair rule, and token stats that count each pair as two sequences."""

from __future__ import annotations

import json

import jsonschema
import pytest
from typer.testing import CliRunner

from tests.data.test_cli_data import schema  # noqa: F401 (a fixture: the documented --json schema)
from tunehouse.cli import app
from tunehouse.data.formats import check_preference
from tunehouse.data.quality import check_identical_outputs
from tunehouse.data.render import preference_chats
from tunehouse.data.validation import validate_file

SYSTEM = {"role": "system", "content": "You are a friendly assistant."}


def pair(i: int = 0, preferred: str | None = None, non_preferred: str | None = None) -> dict:
    """A distinct, warning-free preference pair."""
    return {"input": {"messages": [SYSTEM, {"role": "user", "content": f"Say something nice about {i}."}]},
            "preferred_output": [{"role": "assistant",
                                  "content": preferred or f"{i} is a truly wonderful number."}],
            "non_preferred_output": [{"role": "assistant",
                                      "content": non_preferred or f"{i} is boring and I do not like it."}]}


def good_pairs(n: int = 10) -> list[dict]:
    return [pair(i) for i in range(n)]


def _with(bad: dict, at: int = 3) -> list[dict]:
    rows = good_pairs(10)
    rows.insert(at - 1, bad)
    return rows


def chars(texts: list[str]) -> list[int]:
    """One token per character: exact arithmetic in the token tests."""
    return [len(t) for t in texts]


# --- format rules (errors) -------------------------------------------------------------------------------------

def test_good_pairs_have_no_errors_nor_warnings(write_jsonl):
    report = validate_file(write_jsonl(good_pairs()))
    assert report.ok and report.format == "preference" and report.errors == [] and report.warnings == []


def test_an_output_with_two_messages_is_multiple_output_messages():
    bad = pair()
    bad["non_preferred_output"].append({"role": "assistant", "content": "And another thing entirely."})
    problems = check_preference(bad)
    assert [code for code, _ in problems] == ["multiple_output_messages"]
    assert "'non_preferred_output' has 2 messages" in problems[0][1]


def test_multiple_output_messages_names_the_alias_spelling_and_fails_the_file(write_jsonl):
    bad = pair()
    bad["preferred_completion"] = bad.pop("preferred_output") * 3
    report = validate_file(write_jsonl(_with(bad)))
    assert [(e.line, e.code) for e in report.errors] == [(3, "multiple_output_messages")] and not report.ok
    assert "'preferred_completion' has 3 messages" in report.errors[0].message


@pytest.mark.parametrize("content", ["", "   ", " \n\t ", [{"type": "text", "text": "  "}]])
def test_an_empty_or_whitespace_only_output_is_missing_content(content):
    bad = pair()
    bad["preferred_output"][0]["content"] = content
    problems = check_preference(bad)
    # Exactly one problem per output, never the same one twice.
    assert [code for code, _ in problems] == ["missing_content"] and "preferred_output[0]" in problems[0][1]


def test_an_output_without_content_is_an_error():
    bad = pair()
    del bad["non_preferred_output"][0]["content"]
    assert [code for code, _ in check_preference(bad)] == ["message_missing_key"]


def test_an_output_with_tool_calls_but_no_text_is_missing_content():
    bad = pair()
    bad["preferred_output"][0] = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "praise", "arguments": "{\"n\": 0}"}}]}
    problems = check_preference(bad)
    assert [code for code, _ in problems] == ["missing_content"] and "tool calls but no text" in problems[0][1]


def test_whitespace_only_output_fails_the_file_at_its_line(write_jsonl):
    bad = pair(preferred="  \n ")
    report = validate_file(write_jsonl(_with(bad, at=5)))
    assert [(e.line, e.code) for e in report.errors] == [(5, "missing_content")] and not report.ok


# --- quality rule (warning) ------------------------------------------------------------------------------------

def test_identical_outputs_is_a_warning_and_the_file_still_trains(write_jsonl):
    same = pair(preferred="Seven is a lovely number.", non_preferred="  Seven is a lovely number.\n")
    report = validate_file(write_jsonl(_with(same, at=4)))
    assert report.ok and [(w.line, w.code) for w in report.warnings] == [(4, "identical_outputs")]
    assert "teaches nothing" in report.warnings[0].message


def test_different_outputs_are_not_identical():
    assert check_identical_outputs(pair(preferred="Seven is lovely.", non_preferred="Seven is dull.")) == []


def test_same_text_with_different_tool_calls_is_not_identical():
    same = pair(preferred="Let me check that.", non_preferred="Let me check that.")
    same["preferred_output"][0]["tool_calls"] = [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]
    assert check_identical_outputs(same) == []


# --- token stats: a pair is two sequences ----------------------------------------------------------------------

TINY = {"input": {"messages": [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Hello"}]},
        "preferred_output": [{"role": "assistant", "content": "Yes"}],
        "non_preferred_output": [{"role": "assistant", "content": "No!!"}]}


def test_tokens_count_the_prompt_in_both_sequences_and_both_outputs_as_trained(write_jsonl):
    # Prompt: <bos> 1 + system folded 1 + "SYS" 3 + user turn 5 + "Hello" 5 = 15. Each output adds its turn (5) and
    # text; its text and <end_of_turn> are trained. Sequences 15+5+3 = 23 and 15+5+4 = 24; trained 4 and 5.
    report = validate_file(write_jsonl([TINY] * 10), count_tokens=chars, n_epochs=2)
    stats, est = report.stats, report.estimate
    assert stats["tokens_per_example"]["max"] == 47 and stats["total_tokens"] == 470
    assert stats["trained_tokens_per_example"]["max"] == 9 and stats["total_trained_tokens"] == 90
    assert stats["preferred_tokens_per_example"]["total"] == 40
    assert stats["non_preferred_tokens_per_example"]["total"] == 50
    assert est["tokens_per_epoch"] == 470 and est["total_tokens"] == 940 and est["supervised_tokens"] == 180


def test_each_sequence_is_truncated_on_its_own_and_loses_its_output_first(write_jsonl):
    report = validate_file(write_jsonl([TINY] * 10), count_tokens=chars, context_length=20, n_epochs=1)
    # Both sequences keep 20 tokens; the untrained prefixes are 19 tokens, so 1 trained token is left in each.
    assert report.estimate["tokens_per_epoch"] == 400 and report.estimate["supervised_tokens"] == 20
    too_long = [w for w in report.warnings if w.code == "too_long"]
    assert len(too_long) == report.stats["examples_over_context"] == 10 and "24 tokens" in too_long[0].message


def test_pair_counts_equal_the_two_chats_training_runs(write_jsonl, fixtures_dir):
    """The validator counts a pair as exactly the two chats render.preference_chats trains on."""
    rows = [json.loads(line) for line in (fixtures_dir / "identity_pairs_train.jsonl").read_text().splitlines()]
    multi_turn = pair(3)  # an assistant turn in the prompt is context; an output's weight 0 is still trained
    multi_turn["input"]["messages"] += [{"role": "assistant", "content": "Three is prime."},
                                        {"role": "user", "content": "And four?"}]
    multi_turn["preferred_output"][0]["weight"] = 0
    rows.append(multi_turn)
    chats = [chat for row in rows for chat in preference_chats(row)]
    pairs = validate_file(write_jsonl(rows, "pairs.jsonl"), context_length=None)
    flat = validate_file(write_jsonl(chats, "chats.jsonl"), context_length=None)
    assert pairs.ok and flat.ok
    for key in ("total_tokens", "total_trained_tokens"):
        assert pairs.stats[key] == flat.stats[key], key
    assert pairs.estimate["tokens_per_epoch"] == flat.estimate["tokens_per_epoch"]
    assert pairs.estimate["supervised_tokens"] == flat.estimate["supervised_tokens"]
    sides = pairs.stats["preferred_tokens_per_example"]["total"] + pairs.stats["non_preferred_tokens_per_example"][
        "total"]
    assert sides == pairs.stats["total_trained_tokens"]


def test_chat_files_have_no_preference_stats(write_jsonl):
    from tests.data.conftest import good_chats

    assert "preferred_tokens_per_example" not in validate_file(write_jsonl(good_chats(10))).stats


# --- the command -----------------------------------------------------------------------------------------------

def test_validate_command_shows_both_sides_and_matches_the_schema(fixtures_dir, schema):  # noqa: F811
    path = str(fixtures_dir / "identity_pairs_train.jsonl")
    runner = CliRunner()
    table = runner.invoke(app, ["validate", path], env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    assert "preferred output tokens" in table.output and "non-preferred output tokens" in table.output
    result = runner.invoke(app, ["validate", path, "--json"])
    out = json.loads(result.stdout)
    jsonschema.validate(out, schema)
    assert out["format"] == "preference" and out["stats"]["preferred_tokens_per_example"]["total"] > 0
    # The documented schema requires the pair keys on a preference report, so the doc cannot drift.
    del out["stats"]["non_preferred_tokens_per_example"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(out, schema)
