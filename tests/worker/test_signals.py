"""`tunehouse serve` and its worker child on real signals: the worker ends promptly after it has trained (and
evaluated) a job, idle or in the middle of the next job's evaluation, whether the signal goes to it or to serve.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.api.live import LiveServer, SchemaLog, chat_file, make_data_dir, sdk_client, wait_for
from tests.conftest import TINY

PROMPT_BOUND_S = 15  # well under the worker's SHUTDOWN_GRACE_SECONDS (20), so the graceful path is what passes


def _worker_of(server: LiveServer) -> psutil.Process:
    (worker,) = psutil.Process(server.proc.pid).children()
    return worker


def _gone_within(proc: psutil.Process, seconds: float) -> bool:
    """True once the process has exited (a zombie its parent has not reaped yet has exited too)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _job(client, tmp_path, n_valid: int, name: str):
    train = client.files.create(file=chat_file(tmp_path, 12, f"{name}-train.jsonl").open("rb"), purpose="fine-tune")
    valid = client.files.create(file=chat_file(tmp_path, n_valid, f"{name}-valid.jsonl").open("rb"),
                                purpose="fine-tune")
    return client.fine_tuning.jobs.create(model=TINY, training_file=train.id, validation_file=valid.id,
                                          hyperparameters={"n_epochs": 1, "batch_size": 4})


def _events(client, job_id: str) -> list[str]:
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100).data]


@pytest.fixture
def trained(tmp_path, tiny_model_dir):
    """A live server whose worker has run one job with a validation file (so the in-job evaluation) to success."""
    server = LiveServer(make_data_dir(tmp_path, tiny_model_dir), worker=True,
                        env={"TUNEHOUSE_WORKER_POLL_SECONDS": "0.5"}).start()
    try:  # a failed setup must not leave the server and its worker running
        client = sdk_client(server, SchemaLog())
        job = _job(client, tmp_path, 3, "first")
        wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status in ("succeeded", "failed"), 120)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
        assert any(m.startswith("Evaluation on 3 validation examples") for m in _events(client, job.id))
        yield server, client
    finally:
        server.kill()
        server.stop()


def _send(server: LiveServer, target: str, sig: signal.Signals) -> psutil.Process:
    worker = _worker_of(server)
    os.kill(server.proc.pid if target == "serve" else worker.pid, sig)
    return worker


@pytest.mark.parametrize("target, sig", [("serve", signal.SIGTERM), ("serve", signal.SIGINT),
                                         ("serve", signal.SIGKILL), ("worker", signal.SIGTERM)],
                         ids=["serve-SIGTERM", "serve-SIGINT", "serve-SIGKILL", "worker-SIGTERM"])
def test_idle_worker_that_trained_a_job_ends_promptly(trained, target, sig):
    server, _ = trained
    worker = _send(server, target, sig)
    assert _gone_within(worker, PROMPT_BOUND_S), f"worker {worker.pid} still {worker.status()} after {sig.name}"


@pytest.mark.parametrize("target, sig", [("serve", signal.SIGTERM), ("worker", signal.SIGINT)],
                         ids=["serve-SIGTERM", "worker-SIGINT"])
def test_worker_evaluating_a_job_ends_promptly_and_the_job_keeps_its_model(trained, tmp_path, target, sig):
    server, client = trained
    # 91 validation examples answered by both models: far longer than PROMPT_BOUND_S if the worker finished them.
    job = _job(client, tmp_path, 91, "second")
    wait_for(lambda: any(m.startswith("Evaluating the fine-tuned model") for m in _events(client, job.id)), 120, 0.1)
    worker = _send(server, target, sig)
    assert _gone_within(worker, PROMPT_BOUND_S), f"worker {worker.pid} still {worker.status()} after {sig.name}"
    if target == "serve":
        assert server.proc.wait(PROMPT_BOUND_S) is not None  # serve waited for its worker, then exited
    else:
        server.stop()
    server.start()  # API only is enough to read the outcome; the job's training was complete and is kept
    final = client.fine_tuning.jobs.retrieve(job.id)
    assert final.status == "succeeded" and final.fine_tuned_model
    assert "Evaluation skipped: the worker is shutting down" in _events(client, job.id)


def test_a_worker_stuck_after_the_signal_exits_after_the_grace_period():
    """The backstop: whatever keeps the main thread from returning, the process ends and says where it was."""
    code = ("import threading, time, sys\n"
            "from tunehouse.worker import main\n"
            "main.SHUTDOWN_GRACE_SECONDS = 1\n"
            "main._install_stop_handlers(threading.Event())\n"
            "print('ready', flush=True)\n"
            "while True:\n"
            "    time.sleep(0.05)  # never looks at the stop event\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=PROMPT_BOUND_S)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "exiting now" in err and 'File "<string>", line 7' in err  # faulthandler's dump
