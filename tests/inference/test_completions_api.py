"""/v1/completions: raw continuation, echo + logprobs for likelihood scoring (lm-evaluation-harness style)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY
from tests.inference.conftest import ALPHA_TEXT, FT_A, FT_B
from tunehouse.data.render import render_prompt

PROMPT = render_prompt([{"role": "user", "content": "hello there"}])


def test_completion_continues_the_prompt_with_the_adapter(client):
    r = client.completions.create(model=FT_A, prompt=PROMPT, max_tokens=30, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text == ALPHA_TEXT and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_default_max_tokens_is_16(client):
    r = client.completions.create(model=TINY, prompt="the table", temperature=0)
    assert r.usage.completion_tokens <= 16


def test_echo_logprobs_score_the_prompt_like_a_forward_pass(client, app):
    import torch

    scored = PROMPT + ALPHA_TEXT + "<end_of_turn>"
    r = client.completions.create(model=FT_A, prompt=scored, max_tokens=0, echo=True, logprobs=1, temperature=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == scored
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts the first token
    assert "".join(lp.tokens) == scored
    assert [scored.find(t, o) == o for t, o in zip(lp.tokens, lp.text_offset, strict=True)] == [True] * len(lp.tokens)
    # the same numbers as a plain forward pass of the reference model with the adapter
    engine = app.state.inference.engine(TINY)
    ids = engine.tokenizer(scored, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = engine.peft(input_ids=torch.tensor([ids])).logits[0].float()
    expected = torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    assert lp.token_logprobs[1:] == pytest.approx(expected.tolist(), abs=1e-4)

    def answer_logprob(model):
        r = client.completions.create(model=model, prompt=scored, max_tokens=0, echo=True, logprobs=0)
        lp = r.choices[0].logprobs
        return sum(x for x, o in zip(lp.token_logprobs, lp.text_offset, strict=True) if o >= len(PROMPT))

    # the answer alpha was trained on is likelier under alpha than under beta or the base
    assert answer_logprob(FT_A) > max(answer_logprob(FT_B), answer_logprob(TINY)) + 1.0


def test_token_id_prompts_and_batches(client):
    r = client.completions.create(model=FT_A, prompt=[[2, 4, 90], [2, 4, 91]], max_tokens=3, temperature=0,
                                  logprobs=2)
    assert [c.index for c in r.choices] == [0, 1]
    for c in r.choices:
        assert len(c.logprobs.tokens) == len(c.logprobs.token_logprobs) == 3
        assert all(len(t) == 2 for t in c.logprobs.top_logprobs)
        assert c.logprobs.text_offset[0] == 0  # offsets index the returned text (no echo)


def test_stream_completion(http):
    r = http.post("/v1/completions", json={"model": FT_A, "prompt": PROMPT, "max_tokens": 30, "temperature": 0,
                                           "stream": True, "stream_options": {"include_usage": True}})
    events = [ln.removeprefix("data: ") for ln in r.text.split("\n") if ln]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == ALPHA_TEXT
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("body, param", [
    ({"prompt": 5}, "prompt"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ({"prompt": "x", "suffix": "y"}, "suffix"),
    ({"prompt": "x", "echo": "yes"}, "echo"),
    ({"prompt": [[999999]]}, "prompt"),
])
def test_bad_completion_parameters_are_400(http, body, param):
    r = http.post("/v1/completions", json={"model": FT_A, **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_unknown_model_is_404(http):
    r = http.post("/v1/completions", json={"model": "no-such-model", "prompt": "x"})
    assert r.status_code == 404
