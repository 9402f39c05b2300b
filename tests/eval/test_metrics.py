"""Evaluation metric rules, one test per rule (tunehouse.eval.metrics is pure: no torch, no HTTP)."""

import math
import subprocess
import sys

import pytest

from tunehouse.eval import metrics as m


def test_metrics_module_does_not_import_torch():
    code = "import sys, tunehouse.eval.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_normalize_collapses_whitespace_and_case():
    assert m.normalize_text("  SELECT  Name\n FROM\tT ") == "select name from t"


def test_normalize_applies_nfkc():
    # Full-width letters and the compatibility ligature fold to their plain forms.
    assert m.normalize_text("ＡＢＣ ﬁ") == "abc fi"


def test_exact_match_ignores_case_and_whitespace_only():
    assert m.exact_match("select  name from t", "SELECT name FROM t")
    assert not m.exact_match("SELECT name FROM t;", "SELECT name FROM t")


def test_contains_finds_reference_inside_answer():
    assert m.contains("Sure! The answer is: Paris.", "the answer is: paris")
    assert not m.contains("Paris", "The answer is Paris")


def test_patterns_all_must_match():
    assert m.patterns_pass("I am Gemma-FT by LocalLab", ["Gemma-FT", "LocalLab"])
    assert not m.patterns_pass("I am Gemma-FT", ["Gemma-FT", "LocalLab"])


def test_patterns_are_case_sensitive_unless_flagged():
    assert not m.patterns_pass("gemma-ft", ["Gemma-FT"])
    assert m.patterns_pass("gemma-ft", ["(?i)Gemma-FT"])


def test_bad_pattern_is_a_clear_error():
    with pytest.raises(ValueError, match="invalid regex"):
        m.compile_patterns(["("])


def test_json_valid_accepts_fenced_json_and_rejects_prose():
    assert m.json_valid('{"a": 1}')
    assert m.json_valid('```json\n{"a": 1}\n```')
    assert not m.json_valid("a: 1")


def test_json_schema_conformance():
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    assert m.json_conforms('{"a": 1}', schema)
    assert not m.json_conforms('{"a": "x"}', schema)
    assert not m.json_conforms("not json", schema)


def test_invalid_schema_is_rejected():
    with pytest.raises(ValueError, match="invalid JSON schema"):
        m.check_schema({"type": 12})


def test_pooled_loss_weights_by_tokens_and_perplexity_is_exp():
    loss = m.pooled_loss([(2.0, 1), (3.0, 3)])
    assert loss == pytest.approx(5.0 / 4)
    assert m.perplexity(loss) == pytest.approx(math.exp(1.25))
    assert m.pooled_loss([]) is None and m.perplexity(None) is None


def test_pass_verdict_prefers_patterns_then_schema_then_contains():
    assert m.grade_answer("I am Gemma-FT", "I am Gemma-FT, by LocalLab", ["Gemma-FT"]).passed
    schema = {"type": "object"}
    assert m.grade_answer('{"x": 1}', '{"y": 2}', None, schema=schema).passed
    assert not m.grade_answer("nope", "yes", None).passed


def test_rates_skip_examples_where_a_rule_does_not_apply():
    grades = [m.grade_answer("a", "a", None), m.grade_answer("b", None, ["c"])]
    s = m.summarize(grades, [1.0, 3.0], [4, 6], [10, 10], None)
    assert s["exact_match"] == 1.0  # only the first example has a reference
    assert s["pattern_pass"] == 0.0  # only the second has patterns
    assert s["pass_rate"] == 0.5
    assert s["json_valid"] is None and s["loss"] is None
    assert s["latency_s"] == 2.0 and s["completion_tokens"] == 5.0


def test_preference_accuracy_is_the_share_of_pairs_with_the_preferred_output_strictly_more_likely():
    assert m.preference_accuracy([(-1.0, -2.0), (-3.0, -2.0), (-5.0, -9.0), (-4.0, -4.5)]) == 0.75
    assert m.preference_accuracy([(-2.0, -2.0)]) == 0.0  # a tie is no preference
    assert m.preference_accuracy([]) is None


def test_preference_margin_is_the_mean_log_prob_difference():
    assert m.preference_margin([(-1.0, -2.0), (-3.0, -2.0), (-5.0, -9.0)]) == pytest.approx((1 - 1 + 4) / 3)
    assert m.preference_margin([]) is None


def test_pair_summary_has_the_same_keys_as_an_answer_summary():
    s = m.summarize_pairs([(-2.0, -4.0), (-6.0, -3.0)], [(2.0, 4), (6.0, 4)])
    assert set(s) == set(m.summarize([], [], [], [], None)) == set(m.ALL_METRICS)
    assert s["preference_accuracy"] == 0.5 and s["preference_margin"] == pytest.approx(-0.5)
    assert s["loss"] == pytest.approx(1.0) and s["perplexity"] == pytest.approx(math.e)  # of the preferred outputs
    assert s["exact_match"] is None and s["latency_s"] is None  # nothing is generated
    na = m.summarize_pairs(None, None)
    assert na["preference_accuracy"] is None and na["preference_margin"] is None and na["loss"] is None
