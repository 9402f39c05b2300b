"""Two training processes under torchrun (gloo on CPU) reproduce the 1-process run: loss curve, steps, tokens;
pause/resume and a SIGKILLed rank (torchrun restart + resume) too; with no restarts left the job fails clearly;
two "machines" (two torchrun agents on localhost, c10d rendezvous) train the same curve.

These run real torchrun launches through the worker's runner (worker/distributed_run.py) with a Recorder as the
callbacks, so no store is involved; tests/worker/test_distributed.py runs a whole job through the store.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.training.conftest import Recorder, config_to_json, write_examples
from tunehouse.config import Settings
from tunehouse.training.checkpoints import RESUME_FILE
from tunehouse.training.engine import train
from tunehouse.worker.distributed_run import JOB_FILE, LOG_FILE, DistributedTrainingError, run_distributed


def _two(tmp_path, **overrides) -> Settings:
    return Settings(data_dir=tmp_path / "data", train_processes="2", **overrides)


def _assert_same_curve(got: list[dict], want: list[dict]) -> float:
    """Same steps, tokens and per-step metrics (1e-4 relative); returns the largest relative loss difference."""
    assert [m["step"] for m in got] == [m["step"] for m in want]
    assert [m["step_tokens"] for m in got] == [m["step_tokens"] for m in want]
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for key in (k for k in w if k.startswith(("train_", "valid_", "full_valid_"))):
            assert g[key] == pytest.approx(w[key], rel=1e-4), (g["step"], key)
    return max(abs(g["train_loss"] - w["train_loss"]) / abs(w["train_loss"]) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("batch_size", [3, 1])
def test_two_processes_match_one_process(make_config, tmp_path, batch_size):
    # Batch 3 splits unevenly (2 + 1 examples); batch 1 leaves rank 1 without an example every step.
    valid = write_examples(tmp_path / "valid.jsonl", 3)
    one, two = Recorder(), Recorder()
    expected = train(make_config("one", batch_size=batch_size, n_epochs=1, validation_file=valid, eval_every=2), one)
    config = make_config("two", batch_size=batch_size, n_epochs=1, validation_file=valid, eval_every=2)
    result = run_distributed(_two(tmp_path), config, two, threading.Event())
    assert result.status == "succeeded" and result.trained_tokens == expected.trained_tokens
    assert result.hyperparameters == expected.hyperparameters
    worst = _assert_same_curve(two.metrics, one.metrics)
    print(f"batch {batch_size}: max relative train_loss difference {worst:.2e}")
    assert _assert_same_curve(result.metrics, expected.metrics) == worst
    # Reported once (by the main rank only): one start and one finish event, one epoch checkpoint.
    assert [m for _, m, _ in two.events] == [m for _, m, _ in one.events]
    assert [c.step for c in two.checkpoints] == [c.step for c in one.checkpoints]
    assert (config.output_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not (config.output_dir / RESUME_FILE).exists()


def test_dpo_with_two_processes_matches_one_process(make_dpo_config, tmp_path):
    one, two = Recorder(), Recorder()
    train(make_dpo_config("one", batch_size=3, n_epochs=1), one)
    result = run_distributed(_two(tmp_path), make_dpo_config("two", batch_size=3, n_epochs=1), two, threading.Event())
    assert result.status == "succeeded"
    _assert_same_curve(two.metrics, one.metrics)  # train_loss, train_rewards_accuracy, ..., valid_* too


def test_pause_then_resume_with_two_processes_matches_uninterrupted(make_config, tmp_path):
    reference = Recorder()
    train(make_config("ref"), reference)  # 12 examples, batch 4, 2 epochs: 6 steps
    config = make_config("paused")
    first = Recorder(act=lambda done: "pause" if done == 4 else "continue")
    assert run_distributed(_two(tmp_path), config, first, threading.Event()).status == "paused"
    assert (config.output_dir / RESUME_FILE).is_file() and [m["step"] for m in first.metrics] == [1, 2, 3, 4]
    second = Recorder()
    result = run_distributed(_two(tmp_path), config, second, threading.Event())
    assert result.status == "succeeded" and second.events[0][1] == "Resuming from step 4/6"
    _assert_same_curve(first.metrics + second.metrics, reference.metrics)
    _assert_same_curve(result.metrics, reference.metrics)


def _processes(job_file: Path) -> dict[int, bytes]:
    """{pid: environ} of torchrun and its ranks running `job_file` (their command lines name it)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if str(job_file).encode() in cmdline:
            found[int(entry.name)] = environ
    return found


def _rank_pid(job_file: Path, rank: int) -> int:
    """The pid of the training process with RANK=`rank` running `job_file`."""
    pids = [pid for pid, env in _processes(job_file).items() if f"\0RANK={rank}\0".encode() in b"\0" + env]
    assert len(pids) == 1, f"rank {rank} processes for {job_file}: {pids}"
    return pids[0]


class KillRankOne(Recorder):
    """Before step 4, SIGKILL rank 1 (once), as a crash would."""

    def __init__(self, job_file: Path):
        super().__init__()
        self.job_file, self.killed = job_file, None

    def control(self):
        if len(self.metrics) == 3 and self.killed is None:
            self.killed = _rank_pid(self.job_file, 1)
            os.kill(self.killed, signal.SIGKILL)
        return "continue"


def test_a_killed_rank_is_restarted_and_the_run_resumes(make_config, tmp_path):
    reference = Recorder()
    train(make_config("ref"), reference)
    config = make_config("killed", save_every_seconds=0)  # resumable state after every step
    recorder = KillRankOne(config.output_dir / JOB_FILE)
    result = run_distributed(_two(tmp_path, train_max_restarts=1), config, recorder, threading.Event())
    assert recorder.killed is not None and result.status == "succeeded"
    assert "Resuming from step 3/6" in [m for _, m, _ in recorder.events]
    _assert_same_curve(result.metrics, reference.metrics)
    _assert_same_curve(recorder.metrics, reference.metrics)


def test_a_killed_rank_without_restarts_fails_with_the_exit_code_and_log(make_config, tmp_path):
    config = make_config("killed")
    recorder = KillRankOne(config.output_dir / JOB_FILE)
    with pytest.raises(DistributedTrainingError) as info:
        run_distributed(_two(tmp_path, train_max_restarts=0), config, recorder, threading.Event())
    message = str(info.value)
    assert "torchrun exited with code 1 without a result" in message and "torchrun.log" in message
    assert "SIGKILL" in message  # torchrun's summary of the failed rank, from the log's last lines


def test_bad_input_fails_with_the_engines_message(make_config, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "no answer"}]}\n', encoding="utf-8")
    with pytest.raises(ValueError) as in_process:
        train(make_config("one", training_file=bad), Recorder())
    with pytest.raises(ValueError) as info:
        run_distributed(_two(tmp_path), make_config("two", training_file=bad), Recorder(), threading.Event())
    assert str(info.value) == str(in_process.value)


def test_two_machines_with_a_follower_that_knows_no_job(make_config, tmp_path):
    """Two torchrun agents meet at a c10d rendezvous on localhost, as two machines would. The follower starts
    first, so its lower pid makes it global rank 0: the job's holder (rank 1) must still lead."""
    reference = Recorder()
    train(make_config("ref"), reference)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{s.getsockname()[1]}"
    follower = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "tunehouse", "--max-restarts", "1",
         "-m", "tunehouse.training.launch"],  # the command docs/training.md gives for the other machines
        env=dict(os.environ, OMP_NUM_THREADS="1", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        settings = Settings(data_dir=tmp_path / "data", train_processes="1", train_nnodes=2,
                            train_rdzv_endpoint=endpoint)
        recorder = Recorder()
        result = run_distributed(settings, make_config("head"), recorder, threading.Event())
        assert follower.wait(timeout=60) == 0
    finally:
        follower.kill()
    assert result.status == "succeeded"
    _assert_same_curve(recorder.metrics, reference.metrics)
    log = (make_config("head").output_dir / LOG_FILE).read_text(encoding="utf-8")
    assert "rank 1 of 2 (local rank 0), main rank 1" in log  # the head's process, elected though not rank 0


# A worker stand-in: trains under torchrun with callbacks whose control() hangs after 2 steps, like a busy worker.
WORKER = """
import json, sys, threading, time
from pathlib import Path
from tunehouse.config import Settings
from tunehouse.training.config import TrainingConfig
from tunehouse.worker.distributed_run import run_distributed
config = TrainingConfig(**json.loads(sys.argv[1]))
class Callbacks:
    steps = 0
    def on_event(self, *a): pass
    def on_checkpoint(self, c): pass
    def on_metrics(self, m): self.steps += 1
    def control(self):
        if self.steps >= 2:
            Path(sys.argv[2]).touch()
            time.sleep(600)
        return "continue"
run_distributed(Settings(data_dir=sys.argv[3], train_processes="2"), config, Callbacks(), threading.Event())
"""


def test_torchrun_and_its_ranks_die_with_the_worker(make_config, tmp_path):
    config = make_config("orphan")
    ready = tmp_path / "ready"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, config_to_json(config), str(ready),
                               str(tmp_path / "data")])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert worker.poll() is None and time.monotonic() < deadline, "the worker never reached step 2"
            time.sleep(0.2)
        job_file = config.output_dir / JOB_FILE
        before = set(_processes(job_file))
        assert len(before) == 3  # torchrun and two ranks
    finally:
        worker.kill()
        worker.wait()
    # torchrun gets SIGTERM at once and ends its ranks. Without that, rank 0 would fail on the lost connection
    # and torchrun would start new ranks (its restart): so no new process may appear.
    deadline = time.monotonic() + 30
    while left := _processes(job_file):
        assert set(left) <= before, "torchrun restarted its ranks after the worker died"
        assert time.monotonic() < deadline, f"still running after the worker died: {sorted(left)}"
        time.sleep(0.05)
