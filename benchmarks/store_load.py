"""Store under load: 200 concurrent API clients for 60 s against one and two `tunehouse serve --no-worker`, on
SQLite and on PostgreSQL, side by side in one run.

    .venv/bin/python benchmarks/store_load.py [--clients 200] [--seconds 60] [--database-url postgresql://...]

Without --database-url a throwaway PostgreSQL cluster is started (tests/pg.py: Debian's binaries, run as the
`postgres` user when we are root) with PostgreSQL's default durability, as SQLite keeps its own (WAL, synchronous
NORMAL). Each configuration gets a fresh database and data dir holding the same seed
objects (one training file, 20 jobs). Clients are asyncio tasks in this process, spread round-robin over the
servers (what a load balancer in front of the replicas would do); each loops over a fixed request mix of reads
(job list, job, events, file list, models) and writes (create a job, then cancel it) for `--seconds`.
Per configuration: requests/s, p50/p99 latency in ms, and errors (any non-2xx or transport error; must be 0).
Clients and servers share this machine's cores, so the figures are for the whole system; the 1-minute load
average is reported next to each row. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.api.live import LiveServer, chat_file, make_data_dir  # noqa: E402
from tests.conftest import TINY  # noqa: E402
from tests.tiny import build_tiny_model  # noqa: E402

SEED_JOBS = 20
# (weight, kind): the mix every client draws from; "create" is a job creation followed by its cancel.
MIX = [(30, "list_jobs"), (25, "get_job"), (20, "events"), (10, "list_files"), (5, "models"), (10, "create")]


def seed(server: LiveServer, work: Path) -> tuple[str, list[str]]:
    """One training file and SEED_JOBS queued jobs through the real API (no worker runs, so they stay queued)."""
    headers = server.auth_header()
    train = chat_file(work, 10)
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
        file_id = client.post("/files", data={"purpose": "fine-tune"},
                              files={"file": (train.name, train.read_bytes())}).raise_for_status().json()["id"]
        jobs = [client.post("/fine_tuning/jobs", json={"model": TINY, "training_file": file_id})
                .raise_for_status().json()["id"] for _ in range(SEED_JOBS)]
    return file_id, jobs


async def one_request(client: httpx.AsyncClient, kind: str, file_id: str, jobs: list[str]) -> int:
    """Runs one request of `kind`; returns the number of HTTP requests made (all must succeed)."""
    if kind == "list_jobs":
        (await client.get("/fine_tuning/jobs", params={"limit": 10})).raise_for_status()
    elif kind == "get_job":
        (await client.get(f"/fine_tuning/jobs/{random.choice(jobs)}")).raise_for_status()
    elif kind == "events":
        (await client.get(f"/fine_tuning/jobs/{random.choice(jobs)}/events")).raise_for_status()
    elif kind == "list_files":
        (await client.get("/files")).raise_for_status()
    elif kind == "models":
        (await client.get("/models")).raise_for_status()
    else:
        created = (await client.post("/fine_tuning/jobs", json={"model": TINY, "training_file": file_id}))
        job_id = created.raise_for_status().json()["id"]
        (await client.post(f"/fine_tuning/jobs/{job_id}/cancel")).raise_for_status()
        return 2
    return 1


async def client_loop(client: httpx.AsyncClient, deadline: float, file_id: str, jobs: list[str],
                      latencies: list[float], errors: list[str]) -> int:
    kinds, weights = [k for _, k in MIX], [w for w, _ in MIX]
    done = 0
    while time.monotonic() < deadline:
        kind = random.choices(kinds, weights)[0]
        start = time.monotonic()
        try:
            n = await one_request(client, kind, file_id, jobs)
        except (httpx.HTTPError, KeyError, ValueError) as e:
            errors.append(f"{kind}: {type(e).__name__}: {e}")
            continue
        latencies.append((time.monotonic() - start) / n)
        done += n
    return done


async def drive(servers: list[LiveServer], clients: int, seconds: float, file_id: str, jobs: list[str]) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    pools = [httpx.AsyncClient(base_url=s.base_url, headers=s.auth_header(), timeout=60, limits=limits)
             for s in servers]
    try:
        deadline = time.monotonic() + seconds
        start = time.monotonic()
        counts = await asyncio.gather(*(client_loop(pools[i % len(pools)], deadline, file_id, jobs, latencies,
                                                    errors) for i in range(clients)))
        elapsed = time.monotonic() - start
    finally:
        for pool in pools:
            await pool.aclose()
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {"requests": sum(counts), "requests_per_s": round(sum(counts) / elapsed, 1),
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1) if ms else None,
            "errors": len(errors), "first_errors": errors[:3], "load_avg_1m": round(os.getloadavg()[0], 2)}


def run_config(store: str, n_servers: int, database_url: str | None, model_dir: Path, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="store-load-") as tmp:
        work = Path(tmp)
        data_dir = make_data_dir(work, model_dir)
        env = {"TUNEHOUSE_DATABASE_URL": database_url} if database_url else {}
        servers = [LiveServer(data_dir, env=env) for _ in range(n_servers)]
        try:
            for s in servers:
                s.start()
            file_id, jobs = seed(servers[0], work)
            row = asyncio.run(drive(servers, args.clients, args.seconds, file_id, jobs))
        finally:
            for s in servers:
                s.stop()
        row.update(store=store, servers=n_servers, sqlite_file_created=(data_dir / "tunehouse.db").exists())
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--database-url", help="a PostgreSQL server to use (each configuration gets a new database)")
    args = parser.parse_args()
    from tests import pg

    work = Path(tempfile.mkdtemp(prefix="store-load-model-"))
    model_dir = build_tiny_model(work / "tiny")
    cluster = None if args.database_url else pg.start_cluster(durable=True)
    admin_url = args.database_url or cluster.url
    rows = []
    try:
        for store in ("sqlite", "postgresql"):
            for n in (1, 2):
                url = pg.create_database(admin_url, f"store_load_{n}") if store == "postgresql" else None
                row = run_config(store, n, url, model_dir, args)
                rows.append(row)
                print(f"{store:10} x{n}: {row['requests_per_s']:8.1f} req/s  p50 {row['p50_ms']} ms  "
                      f"p99 {row['p99_ms']} ms  errors {row['errors']}  load {row['load_avg_1m']}", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    print(json.dumps({"clients": args.clients, "seconds": args.seconds, "cpus": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()
