"""The comparison runner and its OpenAI-SDK backend, against a test double of the HTTP API (no model)."""

import json
import logging

import pytest

from tests.eval.fake_api import FakeAPI
from tunehouse.eval.comparison import EvalError, EvalOptions, auto_max_tokens, evaluate, load_examples
from tunehouse.eval.openai_backend import OpenAIBackend, fetch_results_csv, find_job, render_for_scoring

QA = {"Who are you?": "I am Gemma-FT by LocalLab.", "2+2?": "4", "Capital of France?": "Paris"}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def test_file(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q},
                          {"role": "assistant", "content": a}]} for q, a in QA.items()]
    rows.append({"messages": [{"role": "user", "content": "Who are you?"}], "expected_patterns": ["Gemma-FT"]})
    return _write(tmp_path / "test.jsonl", rows)


def test_prompt_is_everything_before_the_last_assistant_message(test_file):
    ex = load_examples(test_file)
    assert len(ex) == 4
    assert [m["role"] for m in ex[0].messages] == ["system", "user"]
    assert ex[0].reference == "I am Gemma-FT by LocalLab."
    assert ex[3].reference is None and ex[3].patterns == ["Gemma-FT"]


def test_max_examples_limits_the_test_set(test_file):
    assert len(load_examples(test_file, max_examples=2)) == 2


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 1: not valid JSON"),
        ('{"messages": []}', "line 1: expected an object"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "line 1: needs a final assistant message"),
        ('{"messages": [{"role": "user", "content": "hi"}], "expected_patterns": ["("]}', "invalid regex"),
        ('{"messages": [{"role": "assistant", "content": "hi"}]}', "no prompt messages"),
    ],
)
def test_bad_test_data_is_a_clear_error(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(EvalError, match=message):
        load_examples(path)


def test_missing_or_empty_test_file_is_a_clear_error(tmp_path):
    with pytest.raises(EvalError, match="not found"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(EvalError, match="no examples"):
        load_examples(tmp_path / "empty.jsonl")


def test_auto_max_tokens_scales_with_the_reference(test_file):
    short, = load_examples(test_file, 1)
    short.reference = "4"
    assert auto_max_tokens(short) == 32
    short.reference = "x" * 3000
    assert auto_max_tokens(short) == 512


def test_evaluate_compares_model_and_baseline(test_file):
    api = FakeAPI({"tuned": QA, "base": {"2+2?": "4"}})
    result = evaluate(OpenAIBackend(api.client()), "tuned", "base", test_file)
    s = result.summary()
    assert s["n"] == 4
    assert s["model"]["exact_match"] == 1.0 and s["baseline"]["exact_match"] == pytest.approx(1 / 3)
    assert s["model"]["pattern_pass"] == 1.0 and s["baseline"]["pattern_pass"] == 0.0
    assert s["model"]["pass_rate"] == 1.0 and s["baseline"]["pass_rate"] == 0.25
    chats = [body for path, body in api.requests if path == "/v1/chat/completions"]
    assert all(b["temperature"] == 0 for b in chats)
    # One untimed 1-token warm-up per model (loading a model is not latency), then one request per example.
    assert len(chats) == 10 and [b["max_tokens"] for b in chats].count(1) == 2


def test_loss_is_the_mean_logprob_of_the_reference_span(test_file):
    api = FakeAPI({"tuned": QA, "base": {}}, logprob_per_char={"tuned": -0.25, "base": -2.0})
    result = evaluate(OpenAIBackend(api.client()), "tuned", "base", test_file, EvalOptions(template="gemma"))
    assert result.model_run.metrics["loss"] == pytest.approx(0.25)
    assert result.baseline_run.metrics["perplexity"] == pytest.approx(2.718281828 ** 2)
    # The scored span is exactly the reference plus the end-of-turn marker.
    text, start, end = render_for_scoring([{"role": "user", "content": "hi"}], "yo", "gemma")
    assert text[start:end] == "yo<end_of_turn>"
    assert text[:start] == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"


def test_unsupported_scoring_is_na_and_asked_once(test_file):
    api = FakeAPI({"tuned": QA, "base": {}}, completions=False)
    result = evaluate(OpenAIBackend(api.client()), "tuned", "base", test_file)
    assert result.model_run.metrics["loss"] is None and result.model_run.metrics["perplexity"] is None
    assert sum(path == "/v1/completions" for path, _ in api.requests) == 2  # once per model


@pytest.mark.parametrize("status, message, level", [
    (404, "Invalid URL (POST /v1/completions)", logging.INFO),  # a server without /completions
    (400, "echo is not supported", logging.INFO),
    (500, "The server had an error while processing your request", logging.WARNING),
])
def test_refused_scoring_is_na_with_the_servers_answer_shown_and_logged(test_file, caplog, status, message, level):
    api = FakeAPI({"tuned": QA, "base": {}}, completions=False, completions_error=(status, message))
    with caplog.at_level(logging.INFO, logger="tunehouse.eval"):
        result = evaluate(OpenAIBackend(api.client()), "tuned", "base", test_file)
    assert result.model_run.metrics["loss"] is None and result.baseline_run.metrics["loss"] is None
    reason = f"the server answered {status} {message} to /v1/completions with echo and logprobs"
    assert result.notes() == [f"reference loss n/a for tuned: {reason}", f"reference loss n/a for base: {reason}"]
    assert result.summary()["notes"] == result.notes()
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tunehouse.eval"]
    assert logged == [(level, f"reference loss of {m} is n/a: {reason}") for m in ("tuned", "base")]


def test_scored_runs_have_no_notes(test_file):
    api = FakeAPI({"tuned": QA, "base": {}})
    result = evaluate(OpenAIBackend(api.client()), "tuned", "base", test_file)
    assert result.model_run.metrics["loss"] is not None and result.notes() == []
    assert "notes" not in result.summary()


def test_unknown_model_fails_before_any_generation(test_file):
    api = FakeAPI({"base": {}})
    with pytest.raises(EvalError, match="model 'missing' not found"):
        evaluate(OpenAIBackend(api.client()), "missing", "base", test_file)
    assert not any(path == "/v1/chat/completions" for path, _ in api.requests)


def test_worst_failures_put_regressions_first(test_file):
    api = FakeAPI({"tuned": {"2+2?": "5"}, "base": {"2+2?": "4"}})
    result = evaluate(OpenAIBackend(api.client()), "tuned", "base", test_file)
    worst = result.worst_failures(2)
    assert worst[0]["reference"] == "4" and worst[0]["baseline"]["passed"] and not worst[0]["model"]["passed"]


def test_job_of_a_fine_tuned_model_and_its_loss_curve():
    job = {"id": "ftjob-1", "object": "fine_tuning.job", "created_at": 0, "model": "base", "status": "succeeded",
           "fine_tuned_model": "ft:base:org::abc", "organization_id": "org", "result_files": ["file-r"],
           "hyperparameters": {}, "training_file": "file-t", "validation_file": None, "seed": 0,
           "error": None, "finished_at": 1, "trained_tokens": 10}
    csv_text = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,2.5,0.1,,\n2,1.5,0.4,1.7,0.3\n"
    api = FakeAPI({}, jobs=[job], files={"file-r": csv_text})
    client = api.client()
    found = find_job(client, "ft:base:org::abc:ckpt-step-2")
    assert found["id"] == "ftjob-1"
    rows = fetch_results_csv(client, found)
    assert [r["train_loss"] for r in rows] == [2.5, 1.5] and rows[0]["valid_loss"] is None
    assert find_job(client, "ft:other:org::zzz") is None
