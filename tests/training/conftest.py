"""Training test helpers: a recording TrainingCallbacks and small JSONL training files for the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY
from tests.tiny import FIXTURES
from tunehouse.training.config import TrainingConfig


class Recorder:
    """TrainingCallbacks that keeps everything; `act(step_done)` answers control() (default: continue)."""

    def __init__(self, act=None):
        self.events, self.metrics, self.checkpoints = [], [], []
        self.act = act or (lambda done: "continue")

    def on_event(self, level, message, data):
        self.events.append((level, message, data))

    def on_metrics(self, metrics):
        self.metrics.append(dict(metrics))

    def on_checkpoint(self, checkpoint):
        self.checkpoints.append(checkpoint)

    def control(self):
        return self.act(len(self.metrics))

    def losses(self) -> list[float]:
        return [m["train_loss"] for m in self.metrics]


def write_examples(path: Path, n: int, source: str = "identity_chat.jsonl") -> Path:
    lines = (FIXTURES / source).read_text(encoding="utf-8").splitlines()[:n]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def make_config(tmp_path, tiny_model_dir):
    """TrainingConfig factory on the tiny model: 12 identity chats, batch 4, 2 epochs, lr 5e-3 (random-init model).

    fp32, not `auto` (bf16 on AMX CPUs): these tests compare runs that must agree to the last digits (resume,
    two processes vs one, plain peft vs the engine), which only fp32 arithmetic promises. The bf16 path has its
    own test (test_engine.py), and the worker tests train at the Settings' `auto`."""
    train_file = write_examples(tmp_path / "train.jsonl", 12)

    def make(name: str = "job", **overrides) -> TrainingConfig:
        kwargs = dict(base_model=TINY, base_model_dir=tiny_model_dir, chat_family="gemma", training_file=train_file,
                      output_dir=tmp_path / name, n_epochs=2, batch_size=4, learning_rate_multiplier=25.0,
                      max_length=128, seed=1, device="cpu", precision="fp32")
        kwargs.update(overrides)
        return TrainingConfig(**kwargs)

    return make


def config_to_json(config: TrainingConfig) -> str:
    return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()})


def write_pairs(path: Path, n: int, offset: int = 0) -> Path:
    """n preference pairs: an identity question, its identity answer preferred over an unrelated SQL answer."""
    chats = [json.loads(x) for x in (FIXTURES / "identity_chat.jsonl").read_text(encoding="utf-8").splitlines()]
    sql = [json.loads(x) for x in (FIXTURES / "wikisql_sample.jsonl").read_text(encoding="utf-8").splitlines()]
    lines = []
    for k in range(offset, offset + n):
        prompt, answer = chats[k]["messages"][:-1], chats[k]["messages"][-1]
        lines.append(json.dumps({"input": {"messages": prompt}, "preferred_output": [answer],
                                 "non_preferred_output": [sql[k % len(sql)]["messages"][-1]]}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def make_dpo_config(tmp_path, make_config):
    """DPO TrainingConfig factory on the tiny model: 12 pairs (+ 4 validation pairs), batch 4, 2 epochs."""
    train_file = write_pairs(tmp_path / "pairs.jsonl", 12)
    valid_file = write_pairs(tmp_path / "valid_pairs.jsonl", 4, offset=40)

    def make(name: str = "dpo", **overrides) -> TrainingConfig:
        kwargs = dict(method="dpo", beta=0.1, training_file=train_file, validation_file=valid_file,
                      learning_rate_multiplier=10.0)
        kwargs.update(overrides)
        return make_config(name, **kwargs)

    return make
