"""Pause/resume and SIGKILL/resume reproduce the uninterrupted loss curve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.conftest import Recorder, config_to_json
from tunehouse.training.checkpoints import RESUME_FILE
from tunehouse.training.engine import train

ROOT = Path(__file__).resolve().parents[2]
# The child trains, writing each step's loss to a log; after 4 steps its control() hangs, like a busy worker,
# until the test kills it with SIGKILL. save_every_seconds=0 saves the resumable state after every step.
CHILD = """
import json, sys, time
from pathlib import Path
from tunehouse.training.config import TrainingConfig
from tunehouse.training.engine import train
cfg = TrainingConfig(**json.loads(sys.argv[1]))
log = Path(sys.argv[2])
class Callbacks:
    steps = 0
    def on_event(self, *a): pass
    def on_checkpoint(self, c): pass
    def on_metrics(self, m):
        self.steps += 1
        with log.open("a") as f:
            f.write(json.dumps(m) + "\\n")
    def control(self):
        if self.steps >= 4:
            log.with_suffix(".ready").touch()
            time.sleep(600)
        return "continue"
train(cfg, Callbacks())
"""


def test_pause_then_resume_matches_uninterrupted(make_config):
    reference = Recorder()
    train(make_config("ref", n_epochs=3), reference)

    config = make_config("paused", n_epochs=3)
    first = Recorder(act=lambda done: "pause" if done == 4 else "continue")
    result = train(config, first)
    assert result.status == "paused" and (config.output_dir / RESUME_FILE).is_file()
    second = Recorder()
    result = train(config, second)
    assert result.status == "succeeded"
    assert [m["step"] for m in second.metrics] == list(range(5, 10))
    assert first.losses() + second.losses() == pytest.approx(reference.losses(), rel=1e-6)
    assert [m["train_loss"] for m in result.metrics] == pytest.approx(reference.losses(), rel=1e-6)
    assert not (config.output_dir / RESUME_FILE).exists()  # finished: nothing left to resume


def kill_training_child_at_step_4(config, log: Path) -> subprocess.Popen:
    """Train `config` in a child process (CHILD) that hangs after step 4 with its state saved; SIGKILL it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    child = subprocess.Popen([sys.executable, "-c", CHILD, config_to_json(config), str(log)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not log.with_suffix(".ready").exists():
            assert child.poll() is None, "the training child exited early"
            assert time.monotonic() < deadline, "the training child never reached step 4"
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return child


def test_sigkill_then_resume_matches_uninterrupted(make_config, tmp_path):
    reference = Recorder()
    train(make_config("ref", n_epochs=3), reference)

    config = make_config("killed", n_epochs=3, save_every_seconds=0)
    log = tmp_path / "child.jsonl"
    child = kill_training_child_at_step_4(config, log)
    assert child.returncode == -signal.SIGKILL

    resumed = Recorder()
    result = train(config, resumed)
    assert result.status == "succeeded"
    assert resumed.metrics[0]["step"] == 5
    assert [m["train_loss"] for m in result.metrics] == pytest.approx(reference.losses(), rel=1e-6)
