"""Continuous batching (inference/batching.py) on the tiny model: concurrent requests share decode batches and
answer exactly what they answer alone; adapters batch per group; prefixes are reused; slots never leak.

Both engines: llama.cpp (the fast engine, several sequences in one context) and transformers in its batched
mode (what CUDA machines run; forced on here so the padded forward is checked on CPU).
"""

from __future__ import annotations

import threading

import pytest

from tests.conftest import TINY
from tests.inference.conftest import ALPHA_TEXT, BETA_TEXT, FT_A, FT_B, PROMPTS, register_models
from tunehouse.inference.batching import Work


def prompt_ids(tok, text: str) -> list[int]:
    from tunehouse.data.render import render_prompt

    return tok(render_prompt([{"role": "user", "content": text}]), add_special_tokens=False)["input_ids"]


def greedy(engine, ids, adapter, max_tokens: int = 24) -> tuple[list[int], str]:
    from tunehouse.inference.generate import generate, stop_token_ids
    from tunehouse.inference.sampling import SamplingParams

    pieces = list(generate(engine, ids, adapter, SamplingParams(max_tokens, 0.0), stop_token_ids(engine.tokenizer)))
    return [c.token for p in pieces for c in p.tokens], "".join(p.text for p in pieces)


def in_threads(fn, args: list) -> list:
    """fn(*a) for every a, all started together; results in order (exceptions re-raised)."""
    out: list = [None] * len(args)
    start = threading.Barrier(len(args))

    def run(i):
        start.wait()
        try:
            out[i] = fn(*args[i])
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for x in out:
        if isinstance(x, BaseException):
            raise x
    return out


@pytest.fixture
def fast(serve_settings):
    from tunehouse.inference.engine_llamacpp import LlamaCppEngine

    serve_settings.inference_slots = 4
    return LlamaCppEngine(serve_settings, TINY)


@pytest.fixture
def hf_batched(serve_settings):
    from tunehouse.inference.engine_hf import HFEngine

    serve_settings.inference_slots = 4
    return HFEngine(serve_settings, TINY, batched=True)


def jobs(tok, adapters) -> list[tuple[list[int], object]]:
    """Every prompt under the base and both adapters: 12 sequences of three adapter groups."""
    return [(prompt_ids(tok, p), a) for a in (None, adapters["alpha"], adapters["beta"]) for p in PROMPTS]


@pytest.mark.parametrize("engine_fixture", ["fast", "hf_batched"])
def test_concurrent_greedy_equals_sequential_token_for_token(engine_fixture, request, adapters):
    engine = request.getfixturevalue(engine_fixture)
    work = jobs(engine.tokenizer, adapters)
    alone = [greedy(engine, ids, a) for ids, a in work]
    before = (engine.scheduler.batches, engine.scheduler.batched_sequences)
    together = in_threads(lambda ids, a: greedy(engine, ids, a), work)
    assert together == alone
    batches = engine.scheduler.batches - before[0]
    sequences = engine.scheduler.batched_sequences - before[1]
    # 12 sequences of 3 adapters on 4 slots: a decode holds one adapter's sequences, so ~1.4 on average
    assert sequences / batches > 1.2, "concurrent requests did not share decode batches"  # alone: exactly 1
    assert engine.scheduler.pool.busy == 0 and engine.scheduler.open_sequences == 0


def test_mixed_adapters_batched_together_each_answer_in_their_own_style(fast, adapters):
    tok = fast.tokenizer
    work = [(prompt_ids(tok, p), adapters[k]) for p in PROMPTS for k in ("alpha", "beta")]
    texts = [text for _, text in in_threads(lambda ids, a: greedy(fast, ids, a), work)]
    assert texts == [ALPHA_TEXT, BETA_TEXT] * len(PROMPTS)


def test_a_shared_prompt_prefix_is_reused_and_changes_nothing(fast, serve_settings, adapters):
    from tunehouse.inference.engine_llamacpp import LlamaCppEngine

    tok = fast.tokenizer
    first = prompt_ids(tok, "count the rows of the table and then")
    second = first + prompt_ids(tok, " who made you?")[1:]
    greedy(fast, first, adapters["alpha"])
    seq = fast.open(second, adapters["alpha"])
    assert seq.n_past == len(first), "the cached prompt was not reused"
    seq.close()
    other = fast.open(second, adapters["beta"])  # another adapter's KV is never reused
    assert other.n_past == 0
    other.close()
    reused = greedy(fast, second, adapters["alpha"])
    fresh = greedy(LlamaCppEngine(serve_settings, TINY), second, adapters["alpha"])
    assert reused == fresh


def test_closing_a_generation_mid_stream_frees_its_slot_at_once(fast, adapters):
    from tunehouse.inference.generate import generate, stop_token_ids
    from tunehouse.inference.sampling import SamplingParams

    ids = prompt_ids(fast.tokenizer, PROMPTS[0])
    stream = generate(fast, ids, None, SamplingParams(200, 1.0, seed=1), stop_token_ids(fast.tokenizer))
    next(stream), next(stream)
    assert fast.scheduler.pool.busy == 1
    stream.close()
    assert fast.scheduler.pool.busy == 0 and fast.scheduler.open_sequences == 0


def test_more_requests_than_slots_wait_for_one(fast, adapters):
    work = [(prompt_ids(fast.tokenizer, p), None) for p in PROMPTS * 3]  # 12 requests, 4 slots
    assert in_threads(lambda ids, a: greedy(fast, ids, a, 8), work) == [greedy(fast, ids, a, 8) for ids, a in work]
    assert fast.scheduler.pool.busy == 0


def test_scattered_slots_decode_in_slot_order_with_gaps_filled(fast, adapters):
    """llama.cpp decodes a batch in one pass only when its sequence ids are consecutive: the engine feeds
    tokens in slot order and fills short gaps with throwaway tokens that leave no trace in the cache."""
    tok = fast.tokenizer
    ids = [prompt_ids(tok, p) for p in PROMPTS]
    alone = [greedy(fast, x, None, 12) for x in ids]
    seqs = [fast.open(x, None, reuse=False) for x in ids]  # slots 0..3
    assert sorted(s.slot.index for s in seqs) == [0, 1, 2, 3]
    for s in seqs:
        s.prefill()
    for s in seqs[1:3]:
        s.close()
    fills = []
    fill_gaps = fast._fill_gaps
    fast._fill_gaps = lambda slots: fills.append((slots, fill_gaps(slots))) or fills[-1][1]
    before = {s: fast._lib.llama_memory_seq_pos_max(fast._mem, s) for s in (1, 2)}
    # slots 3 and 0 submit out of order; 1 and 2 are idle
    rows = fast._run_batch(None, [(w, 0, 1) for w in
                                  (Work(seqs[3], [ids[3][-1]], False), Work(seqs[0], [ids[0][-1]], False))])
    assert fills == [([0, 3], [(1, before[1] + 1), (2, before[2] + 1)])]
    assert {s: fast._lib.llama_memory_seq_pos_max(fast._mem, s) for s in (1, 2)} == before
    assert [r.shape[0] for r in rows] == [1, 1]
    for s in (seqs[0], seqs[3]):
        s.close()
    assert [greedy(fast, x, None, 12) for x in ids] == alone


def test_the_scheduler_thread_ends_when_idle_and_restarts_on_demand(fast, monkeypatch):
    import time

    from tunehouse.inference import batching

    monkeypatch.setattr(batching, "IDLE_EXIT_S", 0.2)
    ids = prompt_ids(fast.tokenizer, PROMPTS[0])
    first = greedy(fast, ids, None, 6)
    thread = fast.scheduler._thread
    deadline = time.monotonic() + 10
    while thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not thread.is_alive(), "an idle scheduler thread kept running"
    assert greedy(fast, ids, None, 6) == first
    assert fast.scheduler._thread is not thread


# -- through the API, on the fast engine ---------------------------------------------------------------------


@pytest.fixture
def fast_settings(serve_settings, adapters):
    serve_settings.engine = "llamacpp"
    serve_settings.inference_slots = 4
    serve_settings.max_queued_requests = 6
    register_models(serve_settings, adapters)
    return serve_settings


@pytest.fixture
def fast_http(fast_settings):
    from fastapi.testclient import TestClient

    from tunehouse.api.app import create_app

    with TestClient(create_app(fast_settings)) as client:
        yield client


def chat(http, model: str, text: str = "hello there", **kw):
    body = {"model": model, "messages": [{"role": "user", "content": text}], **kw}
    return http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer x"})


def service(http):
    return http.app.state.inference


def test_n_choices_with_a_seed_are_reproducible(fast_http):
    def sample(n):
        r = chat(fast_http, TINY, n=n, temperature=2.0, seed=7, max_tokens=12)
        assert r.status_code == 200, r.text
        return [c["message"]["content"] for c in r.json()["choices"]]

    three = sample(3)
    assert sample(3) == three
    assert len(set(three)) > 1, "the choices should differ from each other"
    assert sample(1) == three[:1]  # choice 0 draws from the seed itself


def test_mixed_adapter_requests_through_the_api(fast_http):
    models = [FT_A, FT_B, FT_A, FT_B, TINY]
    replies = in_threads(lambda m: chat(fast_http, m, max_tokens=16, temperature=0), [(m,) for m in models])
    texts = [r.json()["choices"][0]["message"]["content"] for r in replies]
    assert texts[:4] == [ALPHA_TEXT, BETA_TEXT, ALPHA_TEXT, BETA_TEXT]
    assert texts[4] not in (ALPHA_TEXT, BETA_TEXT)


def test_overload_gets_429_and_recovers(fast_http, fast_settings):
    n = fast_settings.max_queued_requests + 6
    replies = in_threads(lambda: chat(fast_http, TINY, max_tokens=60, temperature=1.0, seed=1), [()] * n)
    codes = sorted(r.status_code for r in replies)
    assert 429 in codes and 200 in codes, codes
    too_many = next(r for r in replies if r.status_code == 429)
    assert too_many.json()["error"]["code"] == "rate_limit_exceeded" and too_many.headers["Retry-After"] == "1"
    assert chat(fast_http, TINY, max_tokens=2).status_code == 200


def test_no_slot_leaks_after_a_thousand_requests(fast_http, fast_settings):
    import time

    def burst(k: int) -> list[int]:
        codes = []
        for i in range(125):  # 8 clients x 125 = 1,000 answered requests
            stream = (i + k) % 3 == 0
            while (r := chat(fast_http, (TINY, FT_A, FT_B)[i % 3], f"q{i}", max_tokens=1 + i % 2,
                             stream=stream)).status_code == 429:  # the queue is full: a client waits, retries
                codes.append(429)
                time.sleep(0.01)
            codes.append(r.status_code)
        return codes

    codes = [c for part in in_threads(burst, [(k,) for k in range(8)]) for c in part]
    assert codes.count(200) == 1000 and set(codes) <= {200, 429}, set(codes)
    svc = service(fast_http)
    engine = svc.engine(TINY)
    assert engine.scheduler.pool.busy == 0 and engine.scheduler.open_sequences == 0
    tickets = [svc.admit() for _ in range(fast_settings.max_queued_requests)]  # every ticket came back
    for t in tickets:
        t.release()


def test_a_client_that_disconnects_mid_stream_frees_its_slot(fast_settings):
    """A live server (uvicorn): the client drops the connection after two chunks; the slot is free at once."""
    import socket
    import time

    import httpx
    import uvicorn

    from tunehouse.api.app import create_app
    from tunehouse.inference.generate import stop_token_ids
    from tunehouse.inference.service import InferenceService

    app = create_app(fast_settings)
    app.state.inference = InferenceService(fast_settings)
    engine = app.state.inference.engine(TINY)
    never_stop = {str(t): -100 for t in stop_token_ids(engine.tokenizer)}  # so it would run all 400 tokens
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        body = {"model": TINY, "messages": [{"role": "user", "content": "hello"}], "stream": True,
                "max_tokens": 400, "temperature": 1.0, "seed": 3, "logit_bias": never_stop}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1") as client:
            with client.stream("POST", "/chat/completions", json=body) as r:
                lines = r.iter_lines()
                for _ in range(4):
                    next(lines)
                assert engine.scheduler.pool.busy == 1
        deadline = time.monotonic() + 5
        while engine.scheduler.pool.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.scheduler.pool.busy == 0 and engine.scheduler.open_sequences == 0
        assert engine.scheduler.batches < 300, "the generation went on after the client left"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_concurrent_evaluation_gives_the_sequential_results_in_order(serve_settings, adapters, tmp_path):
    import json

    from tunehouse.eval.comparison import EvalOptions, evaluate
    from tunehouse.eval.job_eval import InProcessBackend

    serve_settings.engine = "llamacpp"
    serve_settings.inference_slots = 4
    test = tmp_path / "test.jsonl"
    lines = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": ref}]}
             for p in PROMPTS * 2 for ref in (ALPHA_TEXT, BETA_TEXT)]
    test.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    backend = InProcessBackend(serve_settings, {"tuned": (TINY, adapters["alpha"]), "base": (TINY, None)})
    assert backend.default_concurrency == 4

    def rows(concurrency: int) -> list[dict]:
        result = evaluate(backend, "tuned", "base", test, EvalOptions(max_tokens=16, concurrency=concurrency))
        out = result.rows()
        for row in out:
            for key in ("model", "baseline"):
                row[key].pop("latency_s")
        return out

    sequential = rows(1)
    assert rows(4) == sequential
    assert [r["model"]["answer"] for r in sequential] == [ALPHA_TEXT] * len(lines)
    assert [r["reference"] for r in sequential] == [x["messages"][1]["content"] for x in lines]
