"""Slow: the fast engine (llama.cpp + GGUF LoRA) agrees with the reference (transformers + peft on the same
weights, dequantized from the embedded Q4_K_M GGUF) on the real Gemma 3 270M: greedy first 32 tokens, base and
fine-tuned. The issue's criterion, asserted: at least 95% of prompts give identical 32-token greedy decodes.

llama.cpp serves the base at Settings.inference_precision (default f16: the dequantized weights re-encoded as
F16). Differences can only come from arithmetic: with F16 weights llama.cpp rounds weights and activations to
f16 (logits within ~0.1 of the reference); the Q4_K_M file itself ("original") also quantizes activations to
8 bits inside its dot products (logit errors ~1-5), enough to flip the near-ties a fine-tuned model has more
of. Measurements per precision: docs/inference.md. Three rates are printed (-s): prompts whose 32 tokens are
all identical, tokens before the first divergence, and teacher-forced argmax agreement (both engines scoring
the reference continuation in one batch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import llama_cpp  # noqa: F401 - a hard dependency: a broken build must fail, not skip
import pytest

from tests.tiny import FIXTURES

pytestmark = pytest.mark.slow
N_TOKENS = 32
MIN_AGREEMENT = 0.95


@pytest.fixture(scope="module")
def gemma_settings():
    from tunehouse.config import Settings

    root = Path(__file__).resolve().parents[2]
    data_dir = Path(os.environ.get("TUNEHOUSE_TEST_CACHE", root / ".cache" / "test-data"))
    # one llama.cpp thread: far faster than two on a CPU shared with other work (see Settings.inference_threads)
    return Settings(data_dir=data_dir, inference_context=1024, inference_threads=1)


def chats(n: int) -> list[list[dict]]:
    out = []
    for name in ("wikisql_sample.jsonl", "identity_chat.jsonl"):
        lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines()
        out += [json.loads(x)["messages"][:-1] for x in lines[: n // 2]]
    return out


def quick_adapter(settings, out: Path) -> Path:
    """Two real LoRA steps on WikiSQL chats (cached next to the converted Gemma for later runs)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunehouse.base_models import load_base_model
    from tunehouse.data.render import encode_example

    if (out / "adapter_model.safetensors").is_file():
        return out
    model, tok, family = load_base_model(settings, "gemma-3-270m")
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for line in (FIXTURES / "wikisql_sample.jsonl").read_text(encoding="utf-8").splitlines()[-2:]:
        ids, labels, _ = encode_example(json.loads(line), lambda t: tok(t, add_special_tokens=False)["input_ids"],
                                        family)
        model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    return out


def greedy(engine, ids, adapter) -> list[int]:
    from tunehouse.inference.generate import generate
    from tunehouse.inference.sampling import SamplingParams

    params = SamplingParams(max_tokens=N_TOKENS, temperature=0.0)
    return [c.token for p in generate(engine, ids, adapter, params, stop_ids=set()) for c in p.tokens]


def test_fast_engine_agrees_with_reference_on_greedy_tokens(gemma_settings):
    from tunehouse.data.render import render_prompt
    from tunehouse.inference.engine_hf import HFEngine
    from tunehouse.inference.engine_llamacpp import LlamaCppEngine

    ref = HFEngine(gemma_settings, "gemma-3-270m")
    fast = LlamaCppEngine(gemma_settings, "gemma-3-270m", tokenizer=ref.tokenizer, family=ref.family)
    adapter = quick_adapter(gemma_settings, gemma_settings.data_dir / "slow-test-adapter")
    prompts = [ref.tokenizer(render_prompt(m, family=ref.family), add_special_tokens=False)["input_ids"]
               for m in chats(20)]
    rates = {}
    for label, adapter_dir in (("base", None), ("fine-tuned", adapter)):
        same_prompts, prefix_tokens, forced_same = 0, 0, 0
        for ids in prompts:
            a, b = greedy(fast, ids, adapter_dir), greedy(ref, ids, adapter_dir)
            same_prompts += a == b
            prefix_tokens += next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), N_TOKENS)
            forced_same += teacher_forced_matches(fast, ref, ids, b, adapter_dir)
        total = N_TOKENS * len(prompts)
        rates[label] = {"prompts": same_prompts / len(prompts), "prefix_tokens": prefix_tokens / total,
                        "teacher_forced_tokens": forced_same / total}
        print(f"{label} ({fast.gguf_path.name}): {same_prompts}/{len(prompts)} prompts identical over {N_TOKENS} "
              f"greedy tokens; {prefix_tokens / total:.1%} of tokens before the first divergence; teacher-forced "
              f"argmax agreement {forced_same / total:.1%}")
    for label, r in rates.items():
        assert r["prompts"] >= MIN_AGREEMENT, f"{label} ({fast.gguf_path.name}): {r}"


def teacher_forced_matches(fast, ref, prompt: list[int], continuation: list[int], adapter_dir) -> int:
    """Positions (of the continuation) where both engines pick the same greedy token given the same context."""
    ids = prompt + continuation
    a = {pos: row.argmax() for pos, row in fast.score_rows(ids, adapter_dir) if pos >= len(prompt)}
    b = {pos: row.argmax() for pos, row in ref.score_rows(ids, adapter_dir) if pos >= len(prompt)}
    return sum(a[pos] == b[pos] for pos in a)


QUANTIZED_PROBE = """
import sys, threading
from pathlib import Path
from tunehouse.config import Settings
from tunehouse.inference.engine_llamacpp import LlamaCppEngine
from tunehouse.inference.generate import generate
from tunehouse.inference.sampling import SamplingParams

settings = Settings(data_dir=Path(sys.argv[1]), inference_context=1024, inference_precision=sys.argv[2],
                    inference_slots=2)
engine = LlamaCppEngine(settings, "gemma-3-270m")
ids = engine.tokenizer("<start_of_turn>user\\nwho are you?<end_of_turn>\\n<start_of_turn>model\\n",
                       add_special_tokens=False)["input_ids"]
out = []
def run():
    pieces = generate(engine, ids, None, SamplingParams(8, 0.0), stop_ids=set())
    out.append([c.token for p in pieces for c in p.tokens])
threads = [threading.Thread(target=run) for _ in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
print(len(out[0]), len(out[1]))
"""


@pytest.mark.parametrize("precision", ["original", "q8_0"])
def test_quantized_precisions_decode_without_crashing(gemma_settings, precision):
    """llama.cpp's AMX/repacked weight buffers crashed llama_decode (SIGSEGV) for quantized GGUFs on AMX CPUs;
    the engine loads weights without them. Run in a subprocess so a crash fails the test, not the session."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", QUANTIZED_PROBE, str(gemma_settings.data_dir), precision],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["8", "8"]
