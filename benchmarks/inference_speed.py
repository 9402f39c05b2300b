"""Inference speed on Gemma 3 270M: the tunehouse engine vs plain Hugging Face `generate`, base and fine-tuned.

    .venv/bin/python benchmarks/inference_speed.py [--prompts 6] [--new-tokens 64] [--adapter DIR] [--data-dir DIR]
        [--precision original,f16,f32]

For each prompt (WikiSQL and identity chats, rendered with the Gemma chat format) and each model (the base, and
a LoRA adapter: a quick real fine-tune of a few steps unless --adapter is given), measured side by side:
prompt tokens/s, decode tokens/s (after the first token, a fixed number of tokens, no early stop) and time to
first token. Medians over prompts. Also the greedy agreement of the two engines on the first 32 tokens. With
several --precision values (the base GGUF llama.cpp serves, Settings.inference_precision) each is timed in the
same run, prompt by prompt next to HF, with its file size and load time.
Target: tunehouse decode >= 4x HF generate. The last line is one JSON object (the fine-tuned model's figures,
the base's under "base").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from tunehouse.catalog import EMBEDDED_GEMMA
from tunehouse.config import Settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TARGET_RATIO = 4.0


def chats(n: int) -> list[list[dict]]:
    out = []
    for name in ("wikisql_sample.jsonl", "identity_chat.jsonl"):
        for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines()[: (n + 1) // 2]:
            out.append(json.loads(line)["messages"])
    return out[:n]


def quick_adapter(settings: Settings, out: Path, steps: int = 6) -> Path:
    """A real LoRA fine-tune (r16, all linear layers, AdamW) of a few steps on WikiSQL chats."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunehouse.base_models import load_base_model
    from tunehouse.data.render import encode_example

    if (out / "adapter_model.safetensors").is_file():
        return out
    model, tok, family = load_base_model(settings, EMBEDDED_GEMMA)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    lines = (FIXTURES / "wikisql_sample.jsonl").read_text(encoding="utf-8").splitlines()
    examples = [encode_example(json.loads(x), lambda t: tok(t, add_special_tokens=False)["input_ids"], family)
                for x in lines[-steps * 2:]]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for i in range(steps):
        loss = 0.0
        for ids, labels, _ in examples[2 * i : 2 * i + 2]:
            loss = loss + model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        print(f"  adapter step {i + 1}/{steps} loss {loss.item() / 2:.3f}", flush=True)
    model.save_pretrained(out)
    return out


def time_engine(engine, ids: list[int], adapter, new_tokens: int) -> dict:
    """Our decoding loop (sampling, detokenizing) on a fixed token budget: no stop token ends it early."""
    from tunehouse.inference.generate import generate
    from tunehouse.inference.sampling import SamplingParams

    params = SamplingParams(max_tokens=new_tokens, temperature=0.0)
    t0 = time.perf_counter()
    engine.prefill(ids, adapter)
    prefill = time.perf_counter() - t0
    engine.end()
    t0 = time.perf_counter()
    first, count = None, 0
    for piece in generate(engine, ids, adapter, params, stop_ids=set()):
        count += len(piece.tokens)
        if first is None and piece.tokens:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return {"prompt_tok_s": len(ids) / prefill, "ttft_s": first, "decode_tok_s": (count - 1) / (total - first)}


def time_hf_generate(model, ids: list[int], new_tokens: int) -> dict:
    import torch

    x = torch.tensor([ids])
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(input_ids=x)
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=1, do_sample=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        total = time.perf_counter() - t0
    return {"prompt_tok_s": len(ids) / prefill, "ttft_s": first, "decode_tok_s": (new_tokens - 1) / (total - first)}


def greedy_tokens(engine, ids: list[int], adapter, n: int = 32) -> list[int]:
    from tunehouse.inference.generate import generate
    from tunehouse.inference.sampling import SamplingParams

    out = []
    for piece in generate(engine, ids, adapter, SamplingParams(max_tokens=n, temperature=0.0), stop_ids=set()):
        out += [c.token for c in piece.tokens]
    return out


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def median(rows: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--adapter", type=Path, default=None, help="a PEFT adapter dir (default: a quick fine-tune)")
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("TUNEHOUSE_TEST_CACHE", ROOT / ".cache" / "test-data")))
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0 = auto, as served); HF keeps torch's")
    ap.add_argument("--hf-threads", type=int, default=0,
                    help="torch threads for HF (0 = every core, as trained/served); 1 vs --threads 1 compares "
                         "the engines on one core each, the fair choice on a machine busy with other work")
    ap.add_argument("--precision", default=None,
                    help="comma-separated base GGUF precisions to compare side by side, e.g. original,f16,f32 "
                         "(default: TUNEHOUSE_INFERENCE_PRECISION, as served); the first one is the JSON line's")
    args = ap.parse_args()
    settings = Settings(data_dir=args.data_dir, engine="llamacpp", inference_context=2048,
                        inference_threads=args.threads)
    precisions = args.precision.split(",") if args.precision else [settings.inference_precision]

    from tunehouse.base_models import load_base_model
    from tunehouse.data.render import render_prompt
    from tunehouse.inference.engine_hf import HFEngine
    from tunehouse.inference.engine_llamacpp import LlamaCppEngine, base_gguf

    print("preparing the adapter (a few real LoRA steps)...", flush=True)
    adapter = args.adapter or quick_adapter(settings, args.data_dir / "bench-adapter")
    hf_base, tok, family = load_base_model(settings, EMBEDDED_GEMMA)
    if args.hf_threads > 0:
        import torch

        torch.set_num_threads(args.hf_threads)
    fast, files = {}, {}
    for p in precisions:
        s = settings.model_copy(update={"inference_precision": p})
        t0 = time.perf_counter()
        path = base_gguf(s, EMBEDDED_GEMMA)  # converted once, then cached
        convert = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast[p] = LlamaCppEngine(s, EMBEDDED_GEMMA, tokenizer=tok, family=family, gguf_path=path)
        files[p] = {"file_mb": round(path.stat().st_size / 2**20), "load_s": round(time.perf_counter() - t0, 2),
                    "convert_s": round(convert, 1)}
        print(f"{p:>10}: {path.name} {files[p]['file_mb']} MB, loads in {files[p]['load_s']} s "
              f"(conversion {files[p]['convert_s']} s, 0 when cached)", flush=True)
    prompts = [tok(render_prompt(m[:-1], family=family), add_special_tokens=False)["input_ids"]
               for m in chats(args.prompts)]
    # Warm up all (first llama.cpp graph build, first page faults, first torch kernels), untimed.
    for engine in fast.values():
        time_engine(engine, prompts[0], None, 4)
    time_hf_generate(hf_base, prompts[0], 4)

    results = {p: {} for p in precisions}
    ref = HFEngine(settings, EMBEDDED_GEMMA, model=hf_base, tokenizer=tok, family=family)  # reference engine
    for label, adapter_dir in (("base", None), ("fine-tuned", adapter)):
        if adapter_dir is not None:
            ref.prefill(prompts[0], adapter_dir)  # peft injects the adapter into the base and activates it
            ref.end()
        hf_model = ref.peft if adapter_dir is not None else hf_base  # plain HF generate on the same weights
        ours, theirs = {p: [] for p in precisions}, []
        for ids in prompts:  # side by side, prompt by prompt, so machine noise hits all alike
            for p in precisions:
                ours[p].append(time_engine(fast[p], ids, adapter_dir, args.new_tokens))
            theirs.append(time_hf_generate(hf_model, ids, args.new_tokens))
        reference = [greedy_tokens(ref, ids, adapter_dir) for ids in prompts]
        for p in precisions:
            pairs = zip(prompts, reference, strict=True)
            agree = sum(greedy_tokens(fast[p], ids, adapter_dir) == want for ids, want in pairs)
            r = results[p][label] = {
                "prompt_tok_s": median(ours[p], "prompt_tok_s"), "decode_tok_s": median(ours[p], "decode_tok_s"),
                "ttft_s": median(ours[p], "ttft_s"), "hf_prompt_tok_s": median(theirs, "prompt_tok_s"),
                "hf_decode_tok_s": median(theirs, "decode_tok_s"), "hf_ttft_s": median(theirs, "ttft_s"),
                "greedy_agreement_32": f"{agree}/{len(prompts)}",
            }
            r["ratio_vs_hf"] = round(r["decode_tok_s"] / r["hf_decode_tok_s"], 2)
            print(f"{label:>10} {p:>10}: tunehouse(llama.cpp) prompt {r['prompt_tok_s']:.0f} tok/s, decode "
                  f"{r['decode_tok_s']:.1f} tok/s, TTFT {r['ttft_s']:.3f} s | HF generate prompt "
                  f"{r['hf_prompt_tok_s']:.0f} tok/s, decode {r['hf_decode_tok_s']:.1f} tok/s, TTFT "
                  f"{r['hf_ttft_s']:.3f} s | decode x{r['ratio_vs_hf']} | greedy 32-token agreement "
                  f"{r['greedy_agreement_32']}", flush=True)
    first = precisions[0]
    ft = results[first]["fine-tuned"]
    others = {p: {**files[p], **results[p]} for p in precisions[1:]}
    print(json.dumps({"engine": "llamacpp", "precision": first, **files[first], **ft,
                      "threads": fast[first].threads, "hf_threads": torch_threads(), "target_ratio": TARGET_RATIO,
                      "meets_target": ft["ratio_vs_hf"] >= TARGET_RATIO, "prompts": len(prompts),
                      "new_tokens": args.new_tokens, "load_avg_1m": round(os.getloadavg()[0], 2),
                      "base": results[first]["base"], **({"other_precisions": others} if others else {})}))


if __name__ == "__main__":
    main()
