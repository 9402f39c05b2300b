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


def train_adapter(base_dir: Path, out_dir: Path, answer: str, steps: int = 40, seed: int = 0) -> Path:
    """A real LoRA fine-tune (Adam, all linear layers) teaching the tiny model to answer every prompt with `answer`."""
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

    batch = [encode_example({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": answer}]},
                            encode, family="gemma") for p in PROMPTS]
    width = max(len(ids) for ids, _, _ in batch)
    ids = torch.tensor([x + [0] * (width - len(x)) for x, _, _ in batch])
    labels = torch.tensor([y + [-100] * (width - len(y)) for _, y, _ in batch])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _, _ in batch])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "alpha": train_adapter(tiny_model_dir, root / "alpha", ALPHA_TEXT, seed=1),
        "beta": train_adapter(tiny_model_dir, root / "beta", BETA_TEXT, seed=2),
        "alpha_ckpt": train_adapter(tiny_model_dir, root / "alpha-ckpt", ALPHA_TEXT, steps=20, seed=1),
    }


@pytest.fixture(scope="session")
def gguf_tiny_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with query_pre_attn_scalar = head_dim, the attention scale llama.cpp uses for Gemma 3."""
    out = tmp_path_factory.mktemp("tiny-gguf-compatible")
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, out / f.name)
    config = json.loads((out / "config.json").read_text())
    config["query_pre_attn_scalar"] = config["head_dim"]
    (out / "config.json").write_text(json.dumps(config))
    return out


def register_models(settings, adapters: dict[str, Path], project: str = "default") -> None:
    """Publish the adapters as fine-tuned models and a checkpoint, the way the worker's store calls do."""
    from tunehouse.store.db import connect, now
    from tunehouse.store.runs import add_checkpoint

    conn = connect(settings)
    try:
        for model_id, key in ((FT_A, "alpha"), (FT_B, "beta")):
            conn.execute("INSERT INTO models (id, project, job_id, base_model, adapter_dir, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)", (model_id, project, f"ftjob-{key}", TINY,
                                                        str(adapters[key]), now()))
        job = {"id": "ftjob-alpha", "project": project, "base_model": TINY, "model_id": FT_A}
        add_checkpoint(conn, job, 20, adapters["alpha_ckpt"], {"step": 20}, keep=3)
        conn.commit()
    finally:
        conn.close()


@pytest.fixture
def api_settings(settings, adapters):
    settings.engine = "hf"
    settings.max_queued_requests = 4
    settings.inference_context = 512
    register_models(settings, adapters)
    return settings


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


@pytest.fixture(scope="session")
def openapi_schemas():
    from tests.tiny import FIXTURES

    return json.loads((FIXTURES / "openai_finetune_subset.json").read_text())


def validate(schemas: dict, name: str, obj: dict) -> None:
    """Validate obj against one of OpenAI's component schemas (OpenAPI 3.1 = JSON Schema 2020-12)."""
    import jsonschema

    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": schemas["components"],
            "$ref": f"#/components/schemas/{name}"}
    jsonschema.Draft202012Validator(root).validate(obj)
