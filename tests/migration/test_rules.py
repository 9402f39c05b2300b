"""One test per rule of the migration's pure parts: job reading, selection filters, model mapping, metadata
limits, local-copy matching, holdout sizing, and the parity verdict sentences."""

from __future__ import annotations

import pytest

from tunehouse.migration.jobs import (
    MAX_METADATA_KEYS,
    _hold_out,
    build_metadata,
    check_migratable,
    parse_model_map,
    resolve_target_model,
)
from tunehouse.migration.outcome import Migration, fmt_usd
from tunehouse.migration.parity import compare_metrics, headline
from tunehouse.migration.source import MigrationError, find_local_copy, parse_since, parse_suffix, read_job

JOB = {"id": "ftjob-1", "status": "succeeded", "model": "gpt-4o-mini-2024-07-18", "created_at": 1,
       "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:acme:support:AbC123", "training_file": "file-t",
       "validation_file": None, "seed": 5, "metadata": {"team": "x"},
       "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8}}


def test_suffix_comes_from_the_model_id_and_is_none_when_openai_left_it_empty():
    assert parse_suffix("ft:gpt-4o-mini-2024-07-18:acme:support:AbC123") == "support"
    assert parse_suffix("ft:gpt-4o-mini-2024-07-18:acme::AbC123") is None
    assert parse_suffix("gpt-4o-mini") is None and parse_suffix(None) is None


def test_method_hyperparameters_win_over_the_top_level_and_auto_is_kept():
    job = read_job({**JOB, "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": None}}}})
    assert job.hyperparameters == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    assert read_job(JOB).hyperparameters == JOB["hyperparameters"] and read_job(JOB).method == "supervised"


def test_dpo_hyperparameters_are_kept_as_given():
    job = read_job({**JOB, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}}})
    assert job.method == "dpo" and job.hyperparameters == {"beta": 0.2, "n_epochs": 1}


def test_since_is_the_start_of_the_day_in_utc_and_rejects_other_formats():
    assert parse_since("2027-01-06") == 1799193600
    with pytest.raises(ValueError, match="--since must be a date"):
        parse_since("06/01/2027")


def test_model_map_parses_and_names_a_bad_entry():
    assert parse_model_map("a=b, c = d,") == {"a": "b", "c": "d"}
    with pytest.raises(ValueError, match="'oops' is not SOURCE_MODEL=LOCAL_BASE"):
        parse_model_map("a=b,oops")


def test_target_model_from_map_then_fallback_else_a_reason():
    assert resolve_target_model("gpt-4o", None, {"gpt-4o": "gemma-3-270m"}) == "gemma-3-270m"
    assert resolve_target_model("ft:gpt-4o:acme:x:1", None, {"gpt-4o": "g"}) == "g"  # continued from an ft: model
    assert resolve_target_model("gpt-4.1", "fallback", {"gpt-4o": "g"}) == "fallback"
    with pytest.raises(MigrationError, match="gpt-4.1 matches no --model-map entry \\(gpt-4o\\)"):
        resolve_target_model("gpt-4.1", None, {"gpt-4o": "g"})


def test_unfinished_and_reinforcement_jobs_are_refused_up_front():
    with pytest.raises(MigrationError, match="the source job is running"):
        check_migratable(read_job({**JOB, "status": "running"}))
    with pytest.raises(MigrationError, match="reinforcement fine-tuning is not supported"):
        check_migratable(read_job({**JOB, "method": {"type": "reinforcement", "reinforcement": {}}}))


def test_metadata_gets_the_migration_keys_and_the_holdout():
    meta = build_metadata(read_job(JOB), holdout=7)
    assert meta == {"team": "x", "migrated_from": "ftjob-1", "migrated_model": JOB["fine_tuned_model"],
                    "migration_holdout": "7 examples"}


def test_metadata_over_openais_key_limit_is_a_clear_skip():
    full = {f"k{i}": "v" for i in range(MAX_METADATA_KEYS - 1)}
    with pytest.raises(MigrationError, match="15 metadata keys; with the 2 migration keys that is 17, over the limit"):
        build_metadata(read_job({**JOB, "metadata": full}), holdout=None)
    with pytest.raises(MigrationError, match="metadata value of 'long' is not a string of at most 512"):
        build_metadata(read_job({**JOB, "metadata": {"long": "x" * 513}}), holdout=None)


def test_local_copy_matches_name_and_size_anywhere_under_the_dir(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "train.jsonl").write_bytes(b"12345")
    (tmp_path / "sub" / "train.jsonl").write_bytes(b"123")
    assert find_local_copy(tmp_path, "train.jsonl", 3) == (tmp_path / "sub" / "train.jsonl", "")
    path, why = find_local_copy(tmp_path, "train.jsonl", 4)
    assert path is None and "has 5 bytes" in why and "has 3 bytes" in why and why.endswith("not 4")
    assert find_local_copy(tmp_path, "other.jsonl", 3)[1] == f"no file named other.jsonl in {tmp_path}"
    assert find_local_copy(None, "train.jsonl", 3)[1] == "no --files-dir given"


def test_holdout_leaves_at_least_ten_examples_to_train_on(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(f'{{"i": {i}}}\n' for i in range(12)))
    notes: list[str] = []
    kept, held, n = _hold_out(path, tmp_path, 0.5, 3, notes)
    assert n == 2 and len(kept.read_text().splitlines()) == 10 and len(held.read_text().splitlines()) == 2
    again = _hold_out(path, tmp_path / "again", 0.5, 3, [])
    assert again[1].read_bytes() == held.read_bytes()  # deterministic for the same seed
    path.write_text("".join(f'{{"i": {i}}}\n' for i in range(10)))
    assert _hold_out(path, tmp_path / "small", 0.5, 3, notes) == (path, None, None)
    assert "training needs at least 10" in notes[-1]


def _summary(model: dict, baseline: dict) -> dict:
    return {"model": model, "baseline": baseline, "n": 10}


def test_parity_verdicts_match_beat_and_trail_per_metric():
    got = compare_metrics(_summary({"exact_match": 0.40, "pass_rate": 0.5, "loss": 1.0, "contains": 0.7},
                                   {"exact_match": 0.42, "pass_rate": 0.5, "loss": 1.2, "contains": None}))
    assert [c.text for c in got] == [
        "exact match: local 40.0% vs old 42.0% (trails by 2.0 pts)",
        "pass rate: local 50.0% vs old 50.0% (matches)",
        "reference loss: local 1.000 vs old 1.200 (beats by 0.200)",  # lower loss is better
    ]
    assert headline(got) == ("exact match: local 40.0% vs old 42.0% (trails by 2.0 pts); "
                             "pass rate: local 50.0% vs old 50.0% (matches)")
    assert headline([]) == "no metric both models have"


def test_json_entry_has_exactly_the_documented_keys():
    entry = Migration("ftjob-1", "ft:x").skip("why").to_json()
    assert entry == {"source_job": "ftjob-1", "source_model": "ft:x", "job": None, "fine_tuned_model": None,
                     "status": "skipped", "evaluation": None, "skipped": "why"}
    assert fmt_usd(0.0012) == "$0.0012" and fmt_usd(3.456) == "$3.46" and fmt_usd(None) == "not listed"
