"""Concurrent serving on Gemma 3 270M: 1, 4, 8 and 16 streaming clients against a live `tunehouse serve`.

    .venv/bin/python benchmarks/serving_load.py [--clients 1,4,8,16] [--requests 3] [--max-tokens 48]
        [--data-dir DIR] [--slots 8] [--serial-clients 1,8] [--models mixed|base]

Starts `tunehouse serve --no-worker` twice over the same data dir: once with TUNEHOUSE_INFERENCE_SLOTS=1 (one
sequence decodes at a time: the behaviour before continuous batching, "one-at-a-time") and once with --slots
(continuous batching). Each client streams --requests chat completions one after another, cycling through the
base model and two LoRA adapters (client i starts at model i % 3, so every level mixes all three; `--models
base` sends every request to the base instead). The adapters
are random LoRA weights (peft, r=8, all linear layers, init_lora_weights=False) on the Gemma base, built once:
valid adapters that change the output, not trained ones. Every answer is exactly --max-tokens long (the end
tokens are banned with logit_bias), so the levels do the same work per request.

Per level: aggregate decode tok/s (completion tokens of all clients / wall time), p50/p99 time to first token,
p50/p99 per-token latency (a request's time between its first and last token / its tokens after the first) and
errors. Target: aggregate tok/s at 8 clients >= 3x one client, with p99 TTFT under 2 s. The machine's load is
printed before each phase. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
BASE = "gemma-3-270m"
ADAPTERS = {"ft:gemma-3-270m:bench:rand-a:aaaa0001": 1, "ft:gemma-3-270m:bench:rand-b:bbbb0002": 2}
END_TOKENS = {"1": -100, "106": -100}  # Gemma's <eos> and <end_of_turn>: every answer runs to max_tokens


def random_adapter(settings, out: Path, seed: int) -> Path:
    """A valid PEFT LoRA adapter with random weights on the Gemma base (built once, kept in the data dir)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunehouse.base_models import load_base_model

    if (out / "adapter_model.safetensors").is_file():
        return out
    model, _, _ = load_base_model(settings, BASE)
    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


def register(settings, adapters: dict[str, Path]) -> None:
    """Publish the adapters as fine-tuned models (the row the worker writes when a job succeeds)."""
    from tunehouse.store.db import connect, now

    conn = connect(settings)
    try:
        for model_id, path in adapters.items():
            conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
            conn.execute("INSERT INTO models (id, project, job_id, base_model, adapter_dir, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)", (model_id, "default", "ftjob-bench", BASE, str(path.resolve()),
                                                             now()))
        conn.commit()
    finally:
        conn.close()


def prompts(n: int) -> list[list[dict]]:
    lines = (FIXTURES / "wikisql_sample.jsonl").read_text(encoding="utf-8").splitlines()
    lines += (FIXTURES / "identity_chat.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x)["messages"][:-1] for x in lines[:n]]


class Server:
    """`tunehouse serve --no-worker` in a subprocess with the given slots; stopped on exit."""

    def __init__(self, data_dir: Path, slots: int, precision: str | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "TUNEHOUSE_INFERENCE_SLOTS": str(slots), "TUNEHOUSE_MAX_QUEUED_REQUESTS": "64"}
        if precision:
            env["TUNEHOUSE_INFERENCE_PRECISION"] = precision
        cmd = [str(Path(sys.executable).parent / "tunehouse"), "serve", "--no-worker", "--data-dir",
               str(data_dir), "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Server:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tunehouse serve exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.5)
        raise RuntimeError("tunehouse serve did not start within 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def stream_one(client, model: str, messages: list[dict], max_tokens: int) -> dict:
    """One streamed chat completion: time to first token, per-token latency, tokens (from usage)."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "logit_bias": END_TOKENS}
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    with client.stream("POST", "/chat/completions", json=body) as r:
        if r.status_code != 200:
            return {"error": f"{r.status_code} {r.read()[:200]!r}"}
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if any(c["delta"].get("content") for c in chunk["choices"]):
                last = time.perf_counter()
                first = first or last
    if first is None or tokens < 2:
        return {"error": f"no tokens streamed ({tokens})"}
    return {"ttft": first - t0, "tpot": (last - first) / (tokens - 1), "tokens": tokens}


def run_level(url: str, clients: int, requests: int, max_tokens: int, chats: list[list[dict]],
              models: list[str]) -> dict:
    import httpx

    results: list[dict] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            start.wait()
            for r in range(requests):
                k = c * requests + r
                try:
                    got = stream_one(client, models[(c + r) % len(models)], chats[k % len(chats)], max_tokens)
                except httpx.HTTPError as e:
                    got = {"error": repr(e)}
                with lock:
                    results.append(got)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if "ttft" in r]
    errors = [r["error"] for r in results if "error" in r]
    ttft = sorted(r["ttft"] for r in ok)
    tpot = sorted(r["tpot"] for r in ok)
    return {"clients": clients, "requests": len(results), "errors": len(errors), "error_samples": errors[:2],
            "tok_s": round(sum(r["tokens"] for r in ok) / wall, 1), "wall_s": round(wall, 2),
            "p50_ttft": round(pct(ttft, 50), 3), "p99_ttft": round(pct(ttft, 99), 3),
            "p50_tpot": round(pct(tpot, 50), 4), "p99_tpot": round(pct(tpot, 99), 4)}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(98, max(0, int(q) - 1))]


def phase(name: str, data_dir: Path, slots: int, levels: list[int], args, chats) -> dict[int, dict]:
    print(f"\n== {name}: TUNEHOUSE_INFERENCE_SLOTS={slots}, load {os.getloadavg()[0]:.2f} ==", flush=True)
    out = {}
    with Server(data_dir, slots, args.precision) as server:
        warm = [BASE, *ADAPTERS]
        for model in warm:  # load the base and both adapters (converted once) outside the timings
            import httpx

            with httpx.Client(base_url=server.url, timeout=600) as client:
                stream_one(client, model, chats[0], 4)
        for clients in levels:
            res = run_level(server.url, clients, args.requests, args.max_tokens, chats, args.model_list)
            res["load_avg_1m"] = round(os.getloadavg()[0], 2)
            out[clients] = res
            print(f"{clients:3d} clients: {res['tok_s']:7.1f} tok/s  TTFT p50 {res['p50_ttft']:.3f} s "
                  f"p99 {res['p99_ttft']:.3f} s  per token p50 {res['p50_tpot'] * 1000:.1f} ms p99 "
                  f"{res['p99_tpot'] * 1000:.1f} ms  errors {res['errors']}  (load {res['load_avg_1m']})",
                  flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--serial-clients", default="1,8", help="levels measured one-at-a-time (slots=1) too")
    ap.add_argument("--requests", type=int, default=3, help="streamed requests per client")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--precision", default=None, help="TUNEHOUSE_INFERENCE_PRECISION of the servers (default: "
                    "the setting's, f16)")
    ap.add_argument("--models", default="mixed", choices=["mixed", "base"],
                    help="mixed: clients cycle through the base and both adapters; base: every request on the base")
    ap.add_argument("--data-dir", default=os.environ.get("TUNEHOUSE_TEST_CACHE", str(ROOT / ".cache" / "bench-data")))
    args = ap.parse_args()
    args.model_list = [BASE, *ADAPTERS] if args.models == "mixed" else [BASE]

    from tunehouse.config import Settings

    data_dir = Path(args.data_dir)
    settings = Settings(data_dir=data_dir)
    adapters = {m: random_adapter(settings, data_dir / "bench-adapters" / f"rand-{k}", seed=k)
                for m, k in ADAPTERS.items()}
    register(settings, adapters)
    print(f"Adapters: random LoRA weights (r=8, all linear layers) on {BASE}: valid adapters, not trained "
          f"({', '.join(str(p) for p in adapters.values())})")
    chats = prompts(64)
    levels = [int(x) for x in args.clients.split(",")]
    serial = phase("one-at-a-time", data_dir, 1, [int(x) for x in args.serial_clients.split(",")], args, chats)
    batched = phase("continuous batching", data_dir, args.slots, levels, args, chats)
    one, eight = batched.get(1), batched.get(8)
    summary = {
        "tok_s_1": one and one["tok_s"], "tok_s_8": eight and eight["tok_s"],
        "speedup_8": round(eight["tok_s"] / one["tok_s"], 2) if one and eight else None,
        "p99_ttft_8": eight and eight["p99_ttft"],
        "serial": {str(k): v for k, v in serial.items()}, "batched": {str(k): v for k, v in batched.items()},
        "slots": args.slots, "precision": args.precision or Settings().inference_precision,
        "max_tokens": args.max_tokens, "requests_per_client": args.requests, "models": args.models,
        "adapters": "random LoRA (peft init_lora_weights=False), not trained",
        "load_avg_1m": round(os.getloadavg()[0], 2), "cores": os.cpu_count(),
    }
    if one and eight:
        met = summary["speedup_8"] >= 3 and summary["p99_ttft_8"] < 2
        print(f"\nTarget (8 clients >= 3x one client, p99 TTFT < 2 s): {'met' if met else 'NOT met'}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
