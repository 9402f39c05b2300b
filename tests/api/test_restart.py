"""SIGKILL the server and its worker mid-job, start again: no file, job or event lost, and the job finishes."""

from __future__ import annotations

import csv
import io
import re

from tests.api.live import LiveServer, SchemaLog, chat_file, make_data_dir, sdk_client, wait_for
from tests.conftest import TINY


def test_sigkill_mid_job_then_restart_resumes_and_finishes(tmp_path, tiny_model_dir):
    data_dir = make_data_dir(tmp_path, tiny_model_dir)
    log = SchemaLog()
    server = LiveServer(data_dir, worker=True).start()
    try:
        client = sdk_client(server, log)
        upload = chat_file(tmp_path, 12)
        train = client.files.create(file=upload.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=TINY, training_file=train.id,
                                             hyperparameters={"n_epochs": 15, "batch_size": 6})

        def checkpoint_at(step):
            return lambda: any(e.message == f"Checkpoint created at step {step}"
                               for e in client.fine_tuning.jobs.list_events(job.id, limit=100))

        wait_for(checkpoint_at(4), timeout=180)  # epoch 1's resumable state is on disk by now
        events_before = {e.id: e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)}
        files_before = {f.id: f.bytes for f in client.files.list()}
        server.kill()

        server = LiveServer(data_dir, worker=True)
        server.start()
        client = sdk_client(server, log)
        done = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed")
                        and j, timeout=240)
        assert done.status == "succeeded", done.error
        events_after = {e.id: e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)}
        assert events_before.items() <= events_after.items()  # nothing lost
        assert {f.id: f.bytes for f in client.files.list()}.items() >= files_before.items()
        assert client.files.content(train.id).read() == upload.read_bytes()
        messages = list(events_after.values())
        resumed = [int(m) for m in re.findall(r"Resuming from step (\d+)/30", " ".join(messages))]
        assert resumed and resumed[0] >= 2, messages
        assert any(m.startswith("Worker stopped responding") for m in messages)
        rows = list(csv.DictReader(io.StringIO(client.files.content(done.result_files[0]).text)))
        assert [int(r["step"]) for r in rows] == list(range(1, 31))
        assert log.problems == []
    finally:
        server.stop()
