"""Tool calls: tools rendered into the prompt, `<tool_call>` lines parsed back, tool_choice honoured.

The adapter FT_T was trained (real steps) to answer with a `lookup` call when the tools are offered.
"""

from __future__ import annotations

import json

from tests.inference.conftest import FT_T, TOOL_CALL, TOOLS, validate

ASK = [{"role": "user", "content": "hello there"}]


def test_tool_call_is_returned_as_tool_calls(client, openapi_schemas):
    raw = client.chat.completions.with_raw_response.create(model=FT_T, messages=ASK, tools=TOOLS, temperature=0,
                                                           max_tokens=80)
    validate(openapi_schemas, "CreateChatCompletionResponse", raw.http_response.json())
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice.message.content
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_streamed_tool_call_arrives_as_a_tool_calls_delta(http, openapi_schemas):
    r = http.post("/v1/chat/completions", json={"model": FT_T, "messages": ASK, "tools": TOOLS, "temperature": 0,
                                                "max_tokens": 80, "stream": True})
    chunks = [json.loads(ln[6:]) for ln in r.text.split("\n") if ln.startswith("data: {")]
    for c in chunks:
        validate(openapi_schemas, "CreateChatCompletionStreamResponse", c)
    assert not any(c["choices"][0]["delta"].get("content") for c in chunks)  # the call's text is never streamed
    calls = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls") or []]
    assert len(calls) == 1 and calls[0]["index"] == 0 and calls[0]["function"]["name"] == "lookup"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_named_tool_choice_forces_that_call(client):
    r = client.chat.completions.create(model=FT_T, messages=ASK, tools=TOOLS, temperature=0, max_tokens=80,
                                       tool_choice={"type": "function", "function": {"name": "lookup"}})
    assert r.choices[0].finish_reason == "tool_calls"
    assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}


def test_tool_choice_none_returns_text(client):
    r = client.chat.completions.create(model=FT_T, messages=ASK, tools=TOOLS, temperature=0, max_tokens=80,
                                       tool_choice="none")
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content.startswith("<tool_call>")


def test_tool_results_render_into_the_conversation(client):
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
               {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    r = client.chat.completions.create(model=FT_T, messages=history, tools=TOOLS, temperature=0, max_tokens=5)
    assert r.usage.prompt_tokens > client.chat.completions.create(
        model=FT_T, messages=ASK, tools=TOOLS, temperature=0, max_tokens=5).usage.prompt_tokens
