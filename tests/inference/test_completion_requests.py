"""The request models of /v1/chat/completions and /v1/completions: one case per rule, each answered with OpenAI's
error body naming the parameter (`param`) and the reason (`code`); inert and accepted parameters still answer."""

from __future__ import annotations

import pytest

from tests.conftest import TINY
from tests.inference.conftest import ALPHA_TEXT, FT_A, TOOLS

HI = [{"role": "user", "content": "hi"}]
LOOKUP = {"type": "function", "function": {"name": "lookup"}}


def error_of(r) -> dict:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize("extra, param, code", [
    ({"frobnicate": 1}, "frobnicate", "unknown_parameter"),
    ({"model": None}, "model", "missing_required_parameter"),
    ({"messages": None}, "messages", "missing_required_parameter"),
    ({"messages": []}, "messages", "invalid_value"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "invalid_value"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content", "invalid_value"),
    ({"messages": [*HI, {"role": "tool", "content": "sunny"}]}, "messages[1].tool_call_id",
     "missing_required_parameter"),
    ({"messages": [*HI, {"role": "assistant", "content": None, "tool_calls": [{"function": {"arguments": "{}"}}]}]},
     "messages[1].tool_calls[0].function.name", "missing_required_parameter"),
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"n": True}, "n", "invalid_type"),
    ({"seed": 1.5}, "seed", "invalid_type"),
    ({"stream": "yes"}, "stream", "invalid_type"),
    ({"stop": 5}, "stop", "invalid_type"),
    ({"max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"max_tokens": 3, "max_completion_tokens": 4}, "max_completion_tokens", "invalid_value"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
    ({"stream": True, "stream_options": {"include_usage": True, "foo": 1}}, "stream_options.foo", "unknown_parameter"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type", "invalid_value"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
    ({"tools": TOOLS, "tool_choice": {**LOOKUP, "function": {"name": "other"}}}, "tool_choice", "invalid_value"),
    ({"tool_choice": LOOKUP}, "tool_choice", "invalid_value"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls", "invalid_type"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "invalid_value"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.type",
     "unsupported_value"),
    ({"logit_bias": {"x": 1}}, "logit_bias", "invalid_value"),
    ({"logit_bias": {"5": 200}}, "logit_bias", "invalid_value"),
    ({"audio": None}, "audio", "unsupported_parameter"),
    ({"modalities": ["text", "audio"]}, "modalities", "unsupported_parameter"),
    ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
    ({"store": True}, "store", "unsupported_value"),
    ({"service_tier": "flex"}, "service_tier", "unsupported_value"),
    ({"metadata": {"k": 1}}, "metadata.k", "invalid_type"),
])
def test_chat_request_rules(http, extra, param, code):
    body = {k: v for k, v in {"model": FT_A, "messages": HI, **extra}.items() if v is not None or k == "audio"}
    error = error_of(http.post("/v1/chat/completions", json=body))
    assert (error["param"], error["code"]) == (param, code), error
    assert param in error["message"]


@pytest.mark.parametrize("extra, param", [
    ({"max_tokens": 100000}, "max_tokens"),
    ({"max_completion_tokens": 100000}, "max_completion_tokens"),
])
def test_context_length_is_checked_against_the_model_naming_the_limit_given(http, extra, param):
    error = error_of(http.post("/v1/chat/completions", json={"model": FT_A, "messages": HI, **extra}))
    assert (error["param"], error["code"]) == (param, "context_length_exceeded")
    assert "maximum context length is 512 tokens" in error["message"]


def test_logit_bias_ids_are_checked_against_the_vocabulary(http, app):
    http.post("/v1/chat/completions", json={"model": FT_A, "messages": HI, "max_tokens": 1})
    vocab = app.state.inference.engine(TINY).vocab_size
    error = error_of(http.post("/v1/chat/completions", json={"model": FT_A, "messages": HI, "max_tokens": 1,
                                                             "logit_bias": {str(vocab): 5}}))
    assert (error["param"], error["code"]) == ("logit_bias", "invalid_value") and str(vocab) in error["message"]
    r = http.post("/v1/chat/completions", json={"model": FT_A, "messages": HI, "max_tokens": 1,
                                               "logit_bias": {str(vocab - 1): 5}})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b""], ids=["malformed", "array", "empty"])
def test_a_body_that_is_not_a_json_object_is_invalid_json(http, data):
    r = http.post("/v1/chat/completions", content=data, headers={"content-type": "application/json"})
    assert error_of(r)["code"] == "invalid_json"


def test_inert_and_accepted_parameters_change_nothing(http):
    def answer(**extra) -> str:
        r = http.post("/v1/chat/completions", json={"model": FT_A, "messages": [{"role": "user", "content": "hello"}],
                                                    "temperature": 0, "max_tokens": 30, **extra})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    assert answer() == ALPHA_TEXT
    assert answer(user="u-1", metadata={"run": "7"}, safety_identifier="s", prompt_cache_key="k",
                  store=False, service_tier="auto", modalities=["text"], parallel_tool_calls=False) == ALPHA_TEXT


def test_a_message_read_back_from_a_response_is_valid_history(http):
    first = http.post("/v1/chat/completions", json={"model": FT_A, "messages": HI, "max_tokens": 5, "temperature": 0})
    reply = first.json()["choices"][0]["message"]  # carries refusal and annotations, which OpenAI echoes back
    assert {"refusal", "annotations"} <= set(reply)
    r = http.post("/v1/chat/completions", json={"model": FT_A, "max_tokens": 5,
                                               "messages": [*HI, reply, {"role": "user", "content": "and?"}]})
    assert r.status_code == 200, r.text


def test_text_content_parts_render_like_the_string(http):
    def usage(content) -> int:
        r = http.post("/v1/chat/completions", json={"model": FT_A, "max_tokens": 1,
                                                    "messages": [{"role": "user", "content": content}]})
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens"]

    assert usage([{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]) == usage("hello there")


@pytest.mark.parametrize("extra, param, code", [
    ({"prompt": None}, "prompt", "missing_required_parameter"),
    ({"prompt": []}, "prompt", "invalid_type"),
    ({"prompt": [[1, "a"]]}, "prompt", "invalid_type"),
    ({"prompt": [True]}, "prompt", "invalid_type"),
    ({"logprobs": True}, "logprobs", "invalid_type"),
    ({"logprobs": 6}, "logprobs", "invalid_value"),
    ({"max_tokens": -1}, "max_tokens", "invalid_value"),
    ({"echo": "yes"}, "echo", "invalid_type"),
    ({"messages": HI}, "messages", "unknown_parameter"),
    ({"best_of": 2}, "best_of", "unsupported_parameter"),
    ({"suffix": "y"}, "suffix", "unsupported_parameter"),
    ({"prompt": [[-1]]}, "prompt", "invalid_value"),
])
def test_completion_request_rules(http, extra, param, code):
    body = {k: v for k, v in {"model": FT_A, "prompt": "x", **extra}.items() if v is not None}
    error = error_of(http.post("/v1/completions", json=body))
    assert (error["param"], error["code"]) == (param, code), error


def test_completion_prompt_longer_than_the_context_is_refused(http):
    error = error_of(http.post("/v1/completions", json={"model": FT_A, "prompt": [[5] * 600], "max_tokens": 1}))
    assert (error["param"], error["code"]) == ("prompt", "context_length_exceeded")
