"""validate_file end to end: real datasets, token counting (estimate, batched counter, real tokenizer), stats,
and bounded memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

import tunehouse.data.validation as validation
from tests.data.conftest import chat, good_chats
from tunehouse.data import stats as stats_mod
from tunehouse.data.stats import Distribution
from tunehouse.data.tokens import BOS_TOKENS, FOLDED_OVERHEAD, TURN_OVERHEAD, counter_from_tokenizer
from tunehouse.data.validation import validate_file

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def test_cookbook_toy_file_has_no_format_errors_and_20_auto_epochs(fixtures_dir):
    report = validate_file(fixtures_dir / "cookbook_toy_chat.jsonl")
    # 5 examples: no format error (as in the cookbook); only OpenAI's 10-example minimum, which the job enforces.
    assert report.blocking_errors(ignore={"too_few_examples"}) == []
    assert list(report.error_counts) == ["too_few_examples"]
    assert report.estimate["n_epochs"] == 20
    assert report.stats["messages_per_example"]["min"] == 2 and report.stats["messages_per_example"]["max"] == 9


@pytest.mark.parametrize("name", ["identity_chat.jsonl", "wikisql_sample.jsonl", "chatterbot_sample.jsonl"])
def test_fixture_datasets_validate(fixtures_dir, name):
    report = validate_file(fixtures_dir / name)
    assert report.ok, report.errors
    assert report.examples == sum(1 for line in (fixtures_dir / name).open() if line.strip())


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is not present")
def test_every_shared_dataset_validates():
    for path in sorted(SHARED.glob("*.jsonl")):
        report = validate_file(path)
        assert report.blocking_errors(ignore={"too_few_examples"}) == [], path.name


def _words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_counts_use_the_counter_plus_documented_turn_overheads(write_jsonl):
    rows = [chat(system="Be brief.", user="one two three", answer="four five six seven eight")] * 10
    report = validate_file(write_jsonl(rows), count_tokens=_words)
    per_example = BOS_TOKENS + (FOLDED_OVERHEAD + 2) + (TURN_OVERHEAD + 3) + (TURN_OVERHEAD + 5)
    assert report.stats["tokens_per_example"]["max"] == per_example
    assert report.stats["trained_tokens_per_example"]["max"] == 5 + 1  # answer + <end_of_turn>
    assert report.stats["total_tokens"] == 10 * per_example
    assert not report.tokens_are_estimates and report.stats["tokens_counted_with"] == "tokenizer"


def test_weight_zero_messages_are_not_trained(write_jsonl):
    ex = {"messages": [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c d e", "weight": 0},
                       {"role": "user", "content": "f"}, {"role": "assistant", "content": "g h i j"}]}
    report = validate_file(write_jsonl([ex] * 10), count_tokens=_words)
    assert report.stats["trained_tokens_per_example"]["max"] == 4 + 1


def test_counter_is_called_in_batches(write_jsonl):
    calls = []

    def counter(texts):
        calls.append(len(texts))
        return _words(texts)

    report = validate_file(write_jsonl(good_chats(3000)), count_tokens=counter)
    # user + assistant per example; the system prompt, the same in every example, is counted once.
    assert sum(calls) == 3000 * 2 + 1 and len(calls) <= 3
    per_example = BOS_TOKENS + (FOLDED_OVERHEAD + 5) + (TURN_OVERHEAD + 8) + (TURN_OVERHEAD + 6)  # words
    assert report.stats["total_tokens"] == 3000 * per_example


def test_without_a_tokenizer_counts_are_flagged_as_estimates(write_jsonl):
    report = validate_file(write_jsonl(good_chats(10)))
    assert report.tokens_are_estimates and report.to_json()["tokens_are_estimates"] is True
    assert report.stats["tokens_counted_with"].startswith("estimate")


def test_real_tokenizer_counts(write_jsonl, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    count = counter_from_tokenizer(tok)
    texts = ["What is your name?", "I am Gemma-FT, an AI assistant.", ""]
    assert count(texts) == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    report = validate_file(write_jsonl(good_chats(10)), count_tokens=count)
    assert not report.tokens_are_estimates and report.stats["total_tokens"] > 0


def test_json_report_has_the_documented_top_level_keys(write_jsonl):
    out = validate_file(write_jsonl(good_chats(10))).to_json()
    json.dumps(out)  # serialisable
    assert {"ok", "format", "examples", "errors", "warnings", "stats", "estimate"} <= set(out)
    assert out["estimate"]["n_epochs"] == 10


def test_distribution_is_exact_below_capacity():
    d = Distribution()
    for v in [5, 1, 4, 2, 3]:
        d.add(v)
    assert d.summary() == {"min": 1, "max": 5, "mean": 3.0, "median": 3.0, "p5": 1.2, "p95": 4.8, "total": 15}


def test_distribution_samples_beyond_capacity_but_keeps_exact_extremes():
    d = Distribution(capacity=1000)
    for v in range(100_000):
        d.add(v)
    s = d.summary()
    assert (s["min"], s["max"], s["mean"]) == (0, 99_999, 49_999.5) and not d.exact
    assert abs(s["median"] - 50_000) < 5_000 and len(d._sample) == 1000


def _peak(path) -> int:
    tracemalloc.start()
    validate_file(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_file_size(write_jsonl, monkeypatch):
    # With small caps, validating 4x more (partly bad) examples must not need more memory.
    monkeypatch.setattr(validation, "MAX_TRACKED_EXAMPLES", 500)
    monkeypatch.setattr(validation, "MAX_SYSTEM_PROMPTS", 10)
    monkeypatch.setattr(stats_mod, "RESERVOIR", 500)
    rows = [r for i, c in enumerate(good_chats(5000)) for r in (c, "{bad" if i % 2 else chat(user="?", answer=str(i)))]
    small = _peak(write_jsonl(rows[:2500], name="small.jsonl"))
    large = _peak(write_jsonl(rows, name="large.jsonl"))
    assert large < small * 1.5, (small, large)


def test_data_package_stays_pure():
    import subprocess
    import sys

    code = ("import sys, tunehouse.data.validation, tunehouse.data.split, tunehouse.data.estimates; "
            "bad = [m for m in ('torch', 'sqlite3', 'fastapi', 'transformers') if m in sys.modules]; "
            "ours = [m for m in sys.modules if m.startswith('tunehouse.') and not m.startswith('tunehouse.data')]; "
            "assert not bad and not ours, (bad, ours)")
    subprocess.run([sys.executable, "-c", code], check=True)
