"""200 concurrent mixed requests (uploads, job creation, reads) against one live server: zero errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.api.live import chat_file
from tests.conftest import TINY


def test_200_concurrent_mixed_requests_all_succeed(client, tmp_path, schema_log):
    train = client.files.create(file=chat_file(tmp_path, 12).open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train.id)
    payload = chat_file(tmp_path, 10, "c.jsonl").read_bytes()

    operations = [
        lambda i: client.files.create(file=(f"c{i}.jsonl", payload), purpose="fine-tune").id,
        lambda i: client.fine_tuning.jobs.create(model=TINY, training_file=train.id, metadata={"i": str(i)}).id,
        lambda i: len(client.files.list(limit=5).data),
        lambda i: client.files.retrieve(train.id).id,
        lambda i: len(client.files.content(train.id).read()),
        lambda i: len(client.fine_tuning.jobs.list(limit=5).data),
        lambda i: client.fine_tuning.jobs.retrieve(job.id).id,
        lambda i: len(client.fine_tuning.jobs.list_events(job.id).data),
        lambda i: len(client.models.list().data),
        lambda i: client.models.retrieve(TINY).id,
    ]

    def call(i: int):
        try:
            return ("ok", operations[i % len(operations)](i))
        except Exception as e:  # collected, not raised, so every failure is reported at once
            return ("error", f"request {i}: {type(e).__name__}: {e}")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(call, range(200)))
    errors = [r[1] for r in results if r[0] == "error"]
    assert errors == []
    assert schema_log.checked >= 202
    new_files = {r[1] for i, r in enumerate(results) if i % len(operations) == 0}
    assert len(new_files) == 20 and all(f.startswith("file-") for f in new_files)
    created = [r[1] for i, r in enumerate(results) if i % len(operations) == 1]
    assert len(set(created)) == 20
    listed = {j.id for j in client.fine_tuning.jobs.list(limit=1000).data}
    assert set(created) <= listed


def test_many_concurrent_requests_on_postgresql_never_exhaust_the_connection_pool(tmp_path, tiny_model_dir,
                                                                                  pg_database_url):
    """Far more requests in flight than pooled connections (db.POOL_MAX_SIZE) and than the server's worker
    threads, with the key lookup on the database (single-user mode asks it whether keys exist): requests wait
    for a connection and all succeed (waiting on the threads deadlocked the pool: every one a 500)."""
    import asyncio

    import httpx

    from tests.api.live import LiveServer, make_data_dir
    from tunehouse.store.db import POOL_MAX_SIZE

    server = LiveServer(make_data_dir(tmp_path, tiny_model_dir), database_url=pg_database_url).start()

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=8 * POOL_MAX_SIZE)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits) as client:
            replies = await asyncio.gather(*(client.get("/fine_tuning/jobs" if i % 2 else "/files")
                                             for i in range(8 * POOL_MAX_SIZE)))
        return [r.status_code for r in replies]

    try:
        assert asyncio.run(burst()) == [200] * (8 * POOL_MAX_SIZE)
    finally:
        server.stop()
