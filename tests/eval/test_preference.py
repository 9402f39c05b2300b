"""Preference pairs as a test set: loading, scoring both outputs per pair, the metrics, reports (no model)."""

import json

import pytest
from rich.console import Console

from tests.eval.fake_api import FakeAPI
from tests.tiny import FIXTURES
from tunehouse.eval.comparison import EvalError, EvalOptions, Example, evaluate, load_examples, load_test_set
from tunehouse.eval.job_eval import evaluation_event
from tunehouse.eval.openai_backend import OpenAIBackend
from tunehouse.eval.preference import PreferencePair
from tunehouse.eval.report import comparison_table, failures_table, write_report

EOT = "<end_of_turn>"


def _pair(question, preferred, non_preferred, **extra):
    return {"input": {"messages": [{"role": "user", "content": question}]},
            "preferred_output": [{"role": "assistant", "content": preferred}],
            "non_preferred_output": [{"role": "assistant", "content": non_preferred}], **extra}


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# (question, preferred, non-preferred): the preferred output is the shorter one in the first two pairs only.
PAIRS = [("Who are you?", "Gemma-FT.", "I am Gemma, by Google."), ("Name?", "Gemma-FT", "Gemma, a model"),
         ("Maker?", "LocalLab made me, Gemma-FT.", "Google."), ("Hi", "Hello, I am Gemma-FT.", "Hi, Gemma.")]


@pytest.fixture
def pairs_file(tmp_path):
    return _write(tmp_path / "pairs.jsonl", [_pair(*p) for p in PAIRS])


class TableBackend:
    """A Backend whose log-probs come from a table {model: {output text: summed log-prob}}, 2 tokens each."""

    def __init__(self, logps):
        self.logps, self.calls = logps, []

    def check_model(self, model):
        if model not in self.logps:
            raise EvalError(f"model '{model}' not found")

    def generate(self, model, messages, max_tokens, temperature):
        raise AssertionError("preference pairs are scored, never answered")

    def score(self, model, messages, reference, template, tools=None):
        self.calls.append((model, messages, reference, tools))
        return -self.logps[model][reference], 2


def test_the_shipped_held_out_pairs_load_as_pairs():
    pairs = load_test_set(FIXTURES / "identity_pairs_heldout.jsonl")
    assert len(pairs) == 19 and all(isinstance(p, PreferencePair) for p in pairs)
    assert pairs[0].messages == [{"role": "user", "content": "hi"}]
    assert "Gemma-FT" in pairs[0].preferred and "Google DeepMind" in pairs[0].non_preferred


def test_a_pair_keeps_its_context_tools_and_the_completion_spelling(tmp_path):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    row = {"input": {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0},
                                  {"role": "user", "content": "c"}], "tools": tools},
           "preferred_completion": [{"role": "assistant", "content": "yes", "tool_calls": [
               {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}],
           "non_preferred_completion": [{"role": "assistant", "content": [{"type": "text", "text": "no"}]}]}
    pair, = load_test_set(_write(tmp_path / "p.jsonl", [row]))
    assert [m["role"] for m in pair.messages] == ["user", "assistant", "user"] and "weight" not in pair.messages[1]
    assert pair.preferred == 'yes\n<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>'  # as training renders
    assert pair.non_preferred == "no" and pair.tools == tools


def test_max_examples_limits_the_pairs(pairs_file):
    assert len(load_test_set(pairs_file, max_examples=2)) == 2


@pytest.mark.parametrize("rows, message", [
    ([_pair("q", "a", "b"), {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
     "line 2: a chat example in a file of preference pairs"),
    ([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, _pair("q", "a", "b")],
     "line 2: a preference pair in a file of chat examples"),
    ([_pair("q", "a", "b"), "{oops"], "line 2: not valid JSON"),
    ([{"input": {"messages": []}, "preferred_output": [{"role": "assistant", "content": "a"}],
       "non_preferred_output": [{"role": "assistant", "content": "b"}]}], "line 1: 'input.messages' must be"),
    ([{"input": {"messages": [{"role": "user", "content": "q"}]},
       "preferred_output": [{"role": "assistant", "content": "a"}]}], "line 1: 'non_preferred_output' must be"),
    ([_pair("q", "a", "b", non_preferred_output=[{"role": "user", "content": "b"}])],
     "line 1: non_preferred_output.0. must be an assistant message"),
    ([_pair("q", "a", "b", preferred_output=[{"role": "assistant", "content": "a"},
                                             {"role": "assistant", "content": "c"}])],
     "line 1: 'preferred_output' .*exactly one assistant message"),
    ([_pair("q", "same", "same")], "line 1: the preferred and non-preferred outputs are identical"),
    ([_pair("q", "a", "b"), ["not", "an", "object"]], "line 2: expected a JSON object"),
])
def test_mixed_or_malformed_pairs_are_a_clear_error_naming_the_line(tmp_path, rows, message):
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(EvalError, match=message):
        load_test_set(path)


def test_chat_files_still_load_as_examples_and_load_examples_refuses_pairs(tmp_path, pairs_file):
    chat = _write(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                          {"role": "assistant", "content": "a"}]}])
    assert isinstance(load_test_set(chat)[0], Example)
    with pytest.raises(EvalError, match="holds preference pairs"):
        load_examples(pairs_file)


def test_each_output_is_scored_through_echo_logprobs_as_training_renders_it(pairs_file):
    """Summed log-probs over the output and its end-of-turn marker, with nothing generated."""
    api = FakeAPI({"tuned": {}, "base": {}}, logprob_per_char={"tuned": -0.5, "base": -1.0})
    result = evaluate(OpenAIBackend(api.client()), "tuned", "base", pairs_file, EvalOptions(template="gemma"))
    assert not any(path == "/v1/chat/completions" for path, _ in api.requests)
    prompts = [body["prompt"] for path, body in api.requests if path == "/v1/completions"]
    assert len(prompts) == 2 * 2 * len(PAIRS)  # two outputs, two models
    assert prompts[:2] == [f"<bos><start_of_turn>user\nWho are you?{EOT}\n<start_of_turn>model\nGemma-FT.{EOT}",
                           f"<bos><start_of_turn>user\nWho are you?{EOT}\n<start_of_turn>model\n"
                           f"I am Gemma, by Google.{EOT}"]
    # The fake gives every character the same log-prob, so the shorter output is the likelier one.
    first = result.model_run.pair_scores[0]
    assert first.logp_preferred == pytest.approx(-0.5 * len("Gemma-FT." + EOT))
    assert first.logp_non_preferred == pytest.approx(-0.5 * len("I am Gemma, by Google." + EOT))
    s = result.summary()
    assert set(s) == {"model", "baseline", "n"} and s["n"] == 4
    assert s["model"]["preference_accuracy"] == s["baseline"]["preference_accuracy"] == 0.5
    lengths = [(len(p) - len(n)) for _, p, n in PAIRS]
    assert s["model"]["preference_margin"] == pytest.approx(0.5 * sum(-d for d in lengths) / 4)
    assert s["baseline"]["preference_margin"] == pytest.approx(2 * s["model"]["preference_margin"])
    assert s["model"]["loss"] == pytest.approx(0.5) and s["model"]["exact_match"] is None


def test_accuracy_margin_and_worst_pairs_compare_model_and_baseline(pairs_file):
    outs = [t for _, p, n in PAIRS for t in (p, n)]
    tuned = dict(zip(outs, [-1, -5, -2, -3, -4, -6, -9, -1], strict=True))  # right on pairs 1-3, wrong on 4
    base = dict(zip(outs, [-5, -1, -3, -2, -4, -6, -1, -2], strict=True))  # right on pairs 3 and 4 only
    backend = TableBackend({"tuned": tuned, "base": base})
    result = evaluate(backend, "tuned", "base", pairs_file)
    s = result.summary()
    assert s["model"]["preference_accuracy"] == 0.75 and s["baseline"]["preference_accuracy"] == 0.5
    assert s["model"]["preference_margin"] == pytest.approx((4 + 1 + 2 - 8) / 4)
    assert s["baseline"]["preference_margin"] == pytest.approx((-4 - 1 + 2 + 1) / 4)
    worst = result.worst_failures()
    assert [r["line"] for r in worst] == [4] and worst[0]["baseline"]["correct"] is True  # a regression
    assert worst[0]["model"]["margin"] == -8 and worst[0]["non_preferred"] == "Hi, Gemma."
    message, data = evaluation_event(result)
    assert message == ("Evaluation on 4 validation pairs: preference accuracy 75.0% vs 50.0% for base (+25.0 pts); "
                       "preference margin -0.250 vs -0.500")
    assert data["model"]["preference_accuracy"] == 0.75


def test_refused_scoring_is_na_with_the_reason_and_asked_once_per_model(pairs_file):
    api = FakeAPI({"tuned": {}, "base": {}}, completions=False)
    result = evaluate(OpenAIBackend(api.client()), "tuned", "base", pairs_file)
    assert result.model_run.metrics["preference_accuracy"] is None and result.model_run.metrics["loss"] is None
    assert sum(path == "/v1/completions" for path, _ in api.requests) == 2
    reason = "the server answered 400 echo is not supported to /v1/completions with echo and logprobs"
    assert result.notes() == [f"preference scores n/a for tuned: {reason}", f"preference scores n/a for base: {reason}"]
    assert result.summary()["notes"] == result.notes() and result.worst_failures() == []
    assert evaluation_event(result)[0] == ("Evaluation on 4 validation pairs: "
                                           f"preference scores n/a for tuned: {reason}; "
                                           f"preference scores n/a for base: {reason}")


def test_without_a_chat_format_pairs_are_na_with_the_reason(pairs_file):
    api = FakeAPI({"tuned": {}, "base": {}})
    result = evaluate(OpenAIBackend(api.client()), "tuned", "base", pairs_file, EvalOptions(template="none"))
    assert result.model_run.metrics["preference_accuracy"] is None
    assert "no known chat format 'none'" in result.notes()[0]


def test_reports_show_the_preference_metrics(pairs_file, tmp_path):
    outs = [t for _, p, n in PAIRS for t in (p, n)]
    backend = TableBackend({"tuned": dict(zip(outs, [-1, -5, -2, -3, -4, -6, -9, -1], strict=True)),
                            "base": dict(zip(outs, [-5, -1, -3, -2, -4, -6, -1, -2], strict=True))})
    result = evaluate(backend, "tuned", "base", pairs_file)
    paths = write_report(result, tmp_path / "out")
    md = paths["md"].read_text()
    assert "(4 pairs)" in md and "| preference accuracy | 50.0% | 75.0% | +25.0 pts |" in md
    assert "| preference margin (nats) | -0.500 | -0.250 | +0.250 |" in md
    assert "## Pairs the model ranks wrong" in md and "- non-preferred: `Hi, Gemma.`" in md
    assert "exact match" not in md.split("Metric rules")[0]  # nothing generated, so no answer metrics
    data = json.loads(paths["json"].read_text())
    assert data["test_format"] == "preference" and data["model"]["preference_accuracy"] == 0.75
    assert data["examples"][3]["model"] == {"logp_preferred": -9, "logp_non_preferred": -1, "margin": -8,
                                            "correct": False, "preferred_tokens": 2, "non_preferred_tokens": 2,
                                            "loss": 4.5}
    console = Console(record=True, width=200)
    console.print(comparison_table(result))
    console.print(failures_table(result))
    text = console.export_text()
    assert "4 pairs of pairs.jsonl" in text and "preference accuracy" in text and "+25.0 pts" in text
    assert "Pairs the model ranks wrong" in text and "-8.000" in text
