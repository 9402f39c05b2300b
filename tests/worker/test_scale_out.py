"""Scale-out on a real PostgreSQL: two `serve --no-worker` API servers and two `tunehouse worker` processes on one
database and one blob dir run three SDK jobs to success, each claimed once; one of them after the worker
training it was SIGKILLed mid-training, and the surviving worker resumed it from its saved state.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.api.live import LiveServer, SchemaLog, chat_file, make_data_dir, sdk_client, wait_for
from tests.conftest import TINY


def _start_worker(server: LiveServer, log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - kept open for the process' lifetime
    return subprocess.Popen([sys.executable, "-m", "tunehouse.worker", "--data-dir", str(server.data_dir)],
                            env=server.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _owner_pid(database_url: str, data_dir: Path, job_id: str) -> int | None:
    """The pid of the worker holding `job_id` (worker ids are host:pid:random), read from the store."""
    from tunehouse.config import Settings
    from tunehouse.store.db import connect
    from tunehouse.store.jobs import job_owner

    settings = Settings(data_dir=data_dir, database_url=database_url)
    conn = connect(settings)
    try:
        owner = job_owner(conn, job_id)
    finally:
        conn.close()
    return int(owner.rsplit(":", 2)[1]) if owner else None


def _messages(client, job_id: str) -> list[str]:
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=1000).data]


def test_two_servers_two_workers_three_jobs_one_survives_a_sigkill(tmp_path, tiny_model_dir, pg_database_url):
    data_dir = make_data_dir(tmp_path, tiny_model_dir)
    env = {"TUNEHOUSE_DATABASE_URL": pg_database_url, "TUNEHOUSE_BLOB_DIR": str(tmp_path / "blobs")}
    servers = [LiveServer(data_dir, env=env), LiveServer(data_dir, env=env)]
    workers: list[subprocess.Popen] = []
    log = SchemaLog()
    try:
        for s in servers:
            s.start()
        workers = [_start_worker(servers[0], tmp_path / f"worker-{i}.log") for i in range(2)]
        a, b = sdk_client(servers[0], log), sdk_client(servers[1], log)
        upload = chat_file(tmp_path, 12)
        train = a.files.create(file=upload.open("rb"), purpose="fine-tune")
        assert b.files.retrieve(train.id).bytes == upload.stat().st_size  # the other server sees it at once
        long_job = a.fine_tuning.jobs.create(model=TINY, training_file=train.id,
                                             hyperparameters={"n_epochs": 15, "batch_size": 6})
        short = [b.fine_tuning.jobs.create(model=TINY, training_file=train.id, suffix=f"s{i}",
                                           hyperparameters={"n_epochs": 2, "batch_size": 4}) for i in range(2)]

        # Kill the long job's worker once its epoch-2 checkpoint (and so its resumable state) is saved.
        wait_for(lambda: "Checkpoint created at step 4" in _messages(a, long_job.id), timeout=180)
        victim = _owner_pid(pg_database_url, data_dir, long_job.id)
        (killed,) = [w for w in workers if w.pid == victim]
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(10)

        jobs = [long_job, *short]

        def all_finished():
            fresh = [b.fine_tuning.jobs.retrieve(j.id) for j in jobs]
            return fresh if all(j.status in ("succeeded", "failed") for j in fresh) else None

        done = wait_for(all_finished, timeout=300)
        assert [j.status for j in done] == ["succeeded"] * 3, [j.error for j in done]
        for j in done:
            messages = _messages(a, j.id)
            assert messages.count("Fine-tuning job started") == 1, messages  # claimed once ...
            assert a.models.retrieve(j.fine_tuned_model).id == j.fine_tuned_model
        messages = _messages(b, long_job.id)
        assert messages.count("Fine-tuning job resumed by a worker") == 1  # ... and the killed one once more
        assert re.search(r"Resuming from step ([4-9]|\d\d+)/30", " ".join(messages)), messages
        assert not (data_dir / "tunehouse.db").exists()  # all state in PostgreSQL
        assert (tmp_path / "blobs" / "files").is_dir() and not (data_dir / "files").exists()
        assert log.problems == []
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(60)
        for s in servers:
            s.stop()
