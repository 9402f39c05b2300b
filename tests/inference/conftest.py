"""Inference fixtures: LoRA adapters trained for real (a few gradient steps) on the tiny model, registered as
fine-tuned and checkpoint models, and an in-process app with the official `openai` SDK pointed at it.

Two adapters are trained on different answers so their greedy outputs differ visibly: "style A" answers every
prompt with ALPHA_TEXT, "style B" with BETA_TEXT.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import TINY

ALPHA_TEXT = "select name from table"
BETA_TEXT = "Gemma-FT by LocalLab"
PROMPTS = ["hello there", "what is your name?", "count the rows", "who made you?"]
FT_A = f"ft:{TINY}:tunehouse:alpha:aaaa1111"
FT_B = f"ft:{TINY}:tunehouse:beta:bbbb2222"
CKPT_A = f"{FT_A}:ckpt-step-20"
FLAT = "tiny-flat"
FT_T = f"ft:{TINY}:tunehouse:tools:tttt3333"
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}}}}}]
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Paris"}'}}


def train_adapter(base_dir: Path, out_dir: Path, answer: str | dict, steps: int = 40, seed: int = 0,
                  tools: list | None = None, checkpoint: tuple[int, Path] | None = None) -> Path:
    """A real LoRA fine-tune (Adam, all linear layers) teaching the tiny model to answer every prompt with `answer`
    (a text, or an assistant message such as a tool call); `checkpoint=(step, dir)` also saves that step."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunehouse.data.render import encode_example

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0)
    model = get_peft_model(model, config)

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    reply = answer if isinstance(answer, dict) else {"role": "assistant", "content": answer}
    batch = [encode_example({"messages": [{"role": "user", "content": p}, reply], "tools": tools}, encode,
                            family="gemma") for p in PROMPTS]
    width = max(len(ids) for ids, _, _ in batch)
    ids = torch.tensor([x + [0] * (width - len(x)) for x, _, _ in batch])
    labels = torch.tensor([y + [-100] * (width - len(y)) for _, y, _ in batch])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _, _ in batch])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread, and far faster on a busy machine
    try:
        for step in range(1, steps + 1):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            if checkpoint and step == checkpoint[0]:
                model.save_pretrained(checkpoint[1])
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def serve_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model made learnable and llama.cpp-exact, registered as "tiny-gemma" in the inference tests.

    - embeddings x20: with Gemma's tied head and the tiny init (std 0.02 over 64 dims) logits can never exceed ~1,
      so no fine-tune could make an answer confident; scaled, a few LoRA steps teach a 60-token tool call;
    - query_pre_attn_scalar = head_dim: the attention scale llama.cpp uses for Gemma 3 (the tiny config keeps
      Gemma's default 256 for its head_dim of 32), so its float32 GGUF computes exactly what transformers does.
    """
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("tiny-serve")
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, out / f.name)
    weights = load_file(str(out / "model.safetensors"))
    weights["model.embed_tokens.weight"] = weights["model.embed_tokens.weight"] * 20
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["query_pre_attn_scalar"] = config["head_dim"]
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="session")
def adapters(serve_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    call = {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}
    return {
        "alpha": train_adapter(serve_model_dir, root / "alpha", ALPHA_TEXT, seed=1, checkpoint=(20, root / "alpha-20")),
        "alpha_ckpt": root / "alpha-20",  # the same run's step-20 checkpoint
        "beta": train_adapter(serve_model_dir, root / "beta", BETA_TEXT, seed=2),
        "tools": train_adapter(serve_model_dir, root / "tools", call, steps=60, seed=3, tools=TOOLS),
    }


@pytest.fixture
def serve_settings(settings, serve_model_dir, tiny_model_dir):
    """Settings with "tiny-gemma" re-pointed at the serving variant of the tiny model."""
    from tunehouse.catalog import add_base_model

    add_base_model(settings, TINY, serve_model_dir, family="gemma")
    add_base_model(settings, FLAT, tiny_model_dir, family="gemma")  # near-uniform: for sampling tests
    settings.inference_context = 512
    # llama.cpp on the exact f32 conversion, so fast-vs-reference tests check the mapping, not rounding
    # (the other precisions are tested in test_precision.py)
    settings.inference_precision = "f32"
    return settings


def register_models(settings, adapters: dict[str, Path], project: str = "default") -> None:
    """Publish the adapters as fine-tuned models and a checkpoint, the way the worker's store calls do."""
    from tunehouse.store.checkpoints import add_checkpoint
    from tunehouse.store.db import connect, now

    conn = connect(settings)
    try:
        for model_id, key in ((FT_A, "alpha"), (FT_B, "beta"), (FT_T, "tools")):
            conn.execute("INSERT INTO models (id, project, job_id, base_model, adapter_dir, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)", (model_id, project, f"ftjob-{key}", TINY,
                                                        str(adapters[key]), now()))
        job = {"id": "ftjob-alpha", "project": project, "base_model": TINY, "model_id": FT_A}
        add_checkpoint(conn, job, 20, str(adapters["alpha_ckpt"]), {"step": 20}, keep=3)
        conn.commit()
    finally:
        conn.close()


@pytest.fixture
def api_settings(serve_settings, adapters):
    serve_settings.engine = "hf"
    serve_settings.max_queued_requests = 4
    register_models(serve_settings, adapters)
    return serve_settings


@pytest.fixture
def app(api_settings):
    from tunehouse.api.app import create_app

    return create_app(api_settings)


@pytest.fixture
def http(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(http):
    """The official SDK over the in-process app (TestClient is an httpx.Client)."""
    import openai

    return openai.OpenAI(base_url="http://testserver/v1", api_key="sk-test", http_client=http, max_retries=0)


def _nullable(node):
    """OpenAI's document mixes OpenAPI 3.0's `nullable: true` into 3.1 schemas; JSON Schema needs it spelled out
    (e.g. a stream chunk's `logprobs: null`, which OpenAI itself sends)."""
    if isinstance(node, list):
        return [_nullable(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    nullable = node.pop("nullable", False)
    if nullable and "$ref" in node:
        return {"anyOf": [{"$ref": node.pop("$ref")}, {"type": "null"}], **node}
    if nullable and "type" in node:
        node["type"] = [node["type"], "null"] if isinstance(node["type"], str) else [*node["type"], "null"]
        if "enum" in node:
            node["enum"] = [*node["enum"], None]
    return node


@pytest.fixture(scope="session")
def openapi_schemas():
    from tests.tiny import FIXTURES

    return _nullable(json.loads((FIXTURES / "openai_finetune_subset.json").read_text()))


def validate(schemas: dict, name: str, obj: dict) -> None:
    """Validate obj against one of OpenAI's component schemas (OpenAPI 3.1 = JSON Schema 2020-12)."""
    import jsonschema

    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": schemas["components"],
            "$ref": f"#/components/schemas/{name}"}
    jsonschema.Draft202012Validator(root).validate(obj)
