"""/v1/chat/completions through the official openai SDK on the tiny model with real LoRA adapters."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import TINY
from tests.inference.conftest import ALPHA_TEXT, BETA_TEXT, CKPT_A, FT_A, FT_B, validate


def ask(client, model, text="hello there", **kw):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], temperature=0, max_tokens=12, **kw)


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


def test_stream_chunks_match_openai_and_join_to_the_answer(client, openapi_schemas):
    stream = client.chat.completions.with_raw_response.create(
        model=FT_A, messages=[{"role": "user", "content": "hello there"}], temperature=0, max_tokens=12,
        stream=True, stream_options={"include_usage": True})
    lines = [ln for ln in stream.http_response.text.split("\n") if ln]
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
        model=FT_B, messages=[{"role": "user", "content": "who made you?"}], temperature=0, max_tokens=12, stream=True))
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == BETA_TEXT


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        ask(client, "ft:tiny-gemma:tunehouse:nope:zzzz9999")
    assert e.value.body["code"] == "model_not_found"
