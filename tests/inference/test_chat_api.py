"""/v1/chat/completions through the official openai SDK on the tiny model with real LoRA adapters."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import TINY
from tests.inference.conftest import ALPHA_TEXT, BETA_TEXT, CKPT_A, FLAT, FT_A, FT_B, validate


def ask(client, model, text="hello there", **kw):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], temperature=0, max_tokens=30, **kw)


def test_fine_tuned_model_answers_in_its_style_and_body_matches_openai_schema(client, openapi_schemas):
    raw = ask(client, FT_A)
    body = raw.http_response.json()
    validate(openapi_schemas, "CreateChatCompletionResponse", body)
    resp = raw.parse()
    assert resp.choices[0].message.content == ALPHA_TEXT
    assert resp.choices[0].finish_reason == "stop"
    assert resp.object == "chat.completion" and resp.model == FT_A


def test_checkpoint_model_is_served(client, openapi_schemas):
    body = ask(client, CKPT_A).http_response.json()
    validate(openapi_schemas, "CreateChatCompletionResponse", body)
    assert body["model"] == CKPT_A and body["choices"][0]["message"]["role"] == "assistant"


def test_usage_counts_real_tokens(client, app):
    resp = ask(client, FT_B).parse()
    tok = app.state.inference.engine(TINY).tokenizer
    from tunehouse.data.render import render_prompt

    prompt = render_prompt([{"role": "user", "content": "hello there"}], family="gemma")
    assert resp.usage.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert resp.usage.completion_tokens == len(tok(BETA_TEXT, add_special_tokens=False)["input_ids"])
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_stream_chunks_match_openai_and_join_to_the_answer(http, openapi_schemas):
    r = http.post("/v1/chat/completions", json={
        "model": FT_A, "messages": [{"role": "user", "content": "hello there"}], "temperature": 0, "max_tokens": 30,
        "stream": True, "stream_options": {"include_usage": True}})
    assert r.headers["content-type"].startswith("text/event-stream")
    lines = [ln for ln in r.text.split("\n") if ln]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln.removeprefix("data: ")) for ln in lines[:-1]]
    for c in chunks:
        validate(openapi_schemas, "CreateChatCompletionStreamResponse", c)
        assert c["object"] == "chat.completion.chunk" and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == ALPHA_TEXT
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


def test_sdk_stream_iterates(client):
    parts = list(client.chat.completions.create(
        model=FT_B, messages=[{"role": "user", "content": "who made you?"}], temperature=0, max_tokens=30, stream=True))
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == BETA_TEXT


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        ask(client, "ft:tiny-gemma:tunehouse:nope:zzzz9999")
    assert e.value.body["code"] == "model_not_found"


def test_two_adapters_on_one_base_with_interleaved_concurrent_requests(client, app):
    from concurrent.futures import ThreadPoolExecutor

    models = [FT_A, FT_B] * 3
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda m: ask(client, m, "count the rows").parse().choices[0].message.content, models))
    assert answers == [ALPHA_TEXT, BETA_TEXT] * 3
    svc = app.state.inference
    engine = svc.engine(TINY)
    assert sum(svc.base_loads.values()) == 1  # one base for both adapters
    assert engine.adapter_loads == 2  # switching back and forth never reloads


def test_base_model_differs_from_its_adapters(client):
    base = ask(client, TINY, "count the rows").parse().choices[0].message.content
    assert base not in (ALPHA_TEXT, BETA_TEXT)


def test_queue_full_is_429_and_frees_up(client, app):
    ask(client, FT_A)  # loads the service
    svc = app.state.inference
    tickets = [svc.admit() for _ in range(app.state.settings.max_queued_requests)]
    with pytest.raises(openai.RateLimitError):
        ask(client, FT_A)
    tickets[0].release()
    assert ask(client, FT_A).parse().choices[0].message.content == ALPHA_TEXT
    for t in tickets:
        t.release()


@pytest.mark.parametrize("extra, param", [
    ({"temperature": 3}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": 0}, "n"),
    ({"presence_penalty": -2.5}, "presence_penalty"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"max_tokens": 100000}, "max_tokens"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.type"),
    ({"response_format": {"type": "json_object"}}, "messages"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_bad_or_unsupported_parameters_are_400(http, extra, param):
    body = {"model": FT_A, "messages": [{"role": "user", "content": "hi"}], **extra}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_bad_message_role_is_400(http):
    r = http.post("/v1/chat/completions", json={"model": FT_A, "messages": [{"role": "wizard", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].role"


def test_same_seed_same_sample_and_n_choices(client):
    def sample(seed):
        r = client.chat.completions.create(model=FLAT, messages=[{"role": "user", "content": "hello"}],
                                           temperature=1.0, max_tokens=10, seed=seed, n=2)
        return [c.message.content for c in r.choices]

    a, b, c = sample(7), sample(7), sample(8)
    assert a == b and len(a) == 2
    assert a != c


def test_stop_string_and_length_finish(client):
    r = client.chat.completions.create(model=FT_A, messages=[{"role": "user", "content": "hello there"}],
                                       temperature=0, max_tokens=30, stop=[" from"])
    assert r.choices[0].message.content == ALPHA_TEXT.split(" from")[0]
    assert r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(model=FT_A, messages=[{"role": "user", "content": "hello there"}],
                                       temperature=0, max_completion_tokens=2)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2


def test_logprobs_and_top_logprobs(client, openapi_schemas):
    raw = client.chat.completions.with_raw_response.create(
        model=FT_B, messages=[{"role": "user", "content": "hello there"}], temperature=0, max_tokens=30,
        logprobs=True, top_logprobs=3)
    body = raw.http_response.json()
    validate(openapi_schemas, "CreateChatCompletionResponse", body)
    content = body["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == BETA_TEXT
    for t in content:
        assert len(t["top_logprobs"]) == 3 and t["logprob"] <= 0
        assert t["top_logprobs"][0]["logprob"] == pytest.approx(t["logprob"])  # greedy picks the top token


def test_penalties_change_the_sample(client):
    def run(**kw):
        return client.chat.completions.create(model=FLAT, messages=[{"role": "user", "content": "hello"}],
                                              temperature=0, max_tokens=20, **kw).choices[0].message.content

    plain = run()
    assert run(frequency_penalty=2.0) != plain
    assert run(presence_penalty=0.0) == plain
