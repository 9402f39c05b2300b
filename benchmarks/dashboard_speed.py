"""How fast the dashboard's jobs list renders with many jobs (issue 15: a 500-job list in under a second).

    .venv/bin/python benchmarks/dashboard_speed.py --jobs 500 --repeat 7

Creates N jobs through the store (the API's own functions) in a throwaway data dir, then times `GET /` (the
first page, newest first) and `GET /?status=queued` through the real app in-process, median of --repeat runs
after one warm-up. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def make_jobs(settings, n: int) -> None:
    from tunehouse.store import jobs
    from tunehouse.store.db import connect

    conn = connect(settings)
    try:
        spec = {"model": "gemma-3-270m", "base_model": "gemma-3-270m", "training_file": "file-x", "seed": 1,
                "suffix": "bench", "hyperparameters": {"n_epochs": "auto"}}
        for _ in range(n):
            jobs.create_job(conn, settings, "default", spec)
    finally:
        conn.close()


def time_get(client, path: str, repeat: int) -> float:
    assert client.get(path).status_code == 200  # warm-up (templates compiled, caches filled)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(path)
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    from fastapi.testclient import TestClient

    from tunehouse.api.app import create_app
    from tunehouse.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        make_jobs(settings, args.jobs)
        with TestClient(create_app(settings), client=("127.0.0.1", 5000)) as client:
            first = time_get(client, "/", args.repeat)
            filtered = time_get(client, "/?status=validating_files", args.repeat)
    result = {"jobs": args.jobs, "list_s": round(first, 4), "filtered_list_s": round(filtered, 4),
              "load_1m": round(os.getloadavg()[0], 2)}
    print(f"{args.jobs} jobs: GET / {first * 1000:.1f} ms, GET /?status=validating_files {filtered * 1000:.1f} ms "
          f"(medians of {args.repeat}; load {result['load_1m']})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
