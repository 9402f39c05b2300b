"""Validation-driven `auto` epochs: full validation during training, the best checkpoint as the result, early
stopping, the held-out slice without a validation file, and all of it across a pause/resume.

The tiny random-init model trains on 12 identity chats; validated on 4 WikiSQL chats (another task) its
validation loss is lowest after the first epoch and then rises, so `auto` (at most 8 epochs for 12 examples)
stops early; validated on identity chats it keeps creeping down by less than 1% per evaluation.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny import FIXTURES
from tests.training.conftest import Recorder
from tests.training.test_resume import kill_training_child_at_step_4
from tunehouse.config import Settings
from tunehouse.training import hparams
from tunehouse.training.checkpoints import BEST_DIR, CONFIG_FILE, RESUME_FILE
from tunehouse.training.engine import train
from tunehouse.worker.distributed_run import run_distributed


def _valid(tmp_path: Path, source: str = "wikisql_sample.jsonl") -> Path:
    lines = (FIXTURES / source).read_text(encoding="utf-8").splitlines()[30:34]
    path = tmp_path / f"valid-{source}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _full(rec: Recorder) -> list[tuple[int, float]]:
    return [(m["step"], m["full_valid_loss"]) for m in rec.metrics if "full_valid_loss" in m]


def _weights(adapter: Path) -> dict:
    return load_file(str(adapter / "adapter_model.safetensors"))


def test_auto_epochs_stop_early_and_the_result_is_the_best_checkpoint(make_config, tmp_path):
    rec = Recorder()
    config = make_config(n_epochs="auto", validation_file=_valid(tmp_path), keep_checkpoints=20)
    result = train(config, rec)
    assert result.status == "succeeded" and result.hyperparameters["n_epochs"] == 8  # the cap: 8 x 3 steps
    full = _full(rec)
    best_step, best_loss = min(full, key=lambda p: p[1])
    assert (result.best_step, result.best_valid_loss) == (best_step, pytest.approx(best_loss))
    # Stopped PATIENCE evaluations after the last improvement, long before the cap of 24 steps.
    assert result.stopped_early and rec.metrics[-1]["step"] == full[-1][0] < 24
    assert len(full) - 1 - [s for s, _ in full].index(best_step) == hparams.PATIENCE
    assert best_step < full[-1][0]  # the result is not simply the last weights
    best = _weights(config.output_dir / "checkpoints" / f"step-{best_step}")
    final = _weights(result.adapter_dir)
    assert best.keys() == final.keys() and all((best[k] == final[k]).all() for k in best)
    saved = json.loads((result.adapter_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    assert saved["checkpoint_step"] == best_step and saved["eval_interval"] == 3
    messages = [m for _, m, _ in rec.events]
    assert f"New best validation loss {best_loss:.4f} at step {best_step}" in messages
    assert any(m.startswith(f"Stopping early at step {full[-1][0]}: validation loss has not improved for 3 ")
               for m in messages)
    assert f"Fine-tuned model = checkpoint of step {best_step} (best validation loss {best_loss:.4f})" in messages
    assert not (config.output_dir / BEST_DIR).exists() and not (config.output_dir / RESUME_FILE).exists()


def test_small_improvements_move_the_best_step_but_not_the_patience(make_config, tmp_path):
    rec = Recorder()
    result = train(make_config(n_epochs="auto", validation_file=_valid(tmp_path, "identity_chat.jsonl")), rec)
    full = _full(rec)
    assert result.best_step == min(full, key=lambda p: p[1])[0]
    # The patience counts evaluations since the last improvement of at least 1%, not since the best step.
    gains = [i for i in range(1, len(full)) if hparams.improved(full[i][1], min(v for _, v in full[:i]))]
    last_gain = gains[-1] if gains else 0
    assert result.stopped_early and len(full) - 1 - last_gain == hparams.PATIENCE


def test_explicit_n_epochs_trains_every_epoch_and_keeps_the_last_weights(make_config, tmp_path):
    rec = Recorder()
    result = train(make_config(n_epochs=4, validation_file=_valid(tmp_path)), rec)
    assert [s for s, _ in _full(rec)] == [3, 6, 9, 12]  # epoch ends only
    assert rec.metrics[-1]["step"] == 12 and result.best_step is None and not result.stopped_early
    assert not any("best validation loss" in m or "Stopping early" in m for _, m, _ in rec.events)


def test_a_small_file_without_validation_file_trains_on_everything(make_config):
    rec = Recorder(act=lambda done: "cancel" if done else "continue")
    result = train(make_config(n_epochs="auto"), rec)
    assert result.status == "cancelled" and rec.metrics[0]["total_steps"] == 24  # 12 examples, 8 epochs
    assert not any("holding out" in m or "n_epochs auto" in m for _, m, _ in rec.events)


def test_a_large_file_without_validation_file_holds_out_a_seeded_slice(make_config, tmp_path):
    lines = [json.loads(x) for x in (FIXTURES / "identity_chat.jsonl").read_text(encoding="utf-8").splitlines()]
    chats = [{"messages": c["messages"][:-1] + [{"role": "assistant", "content": f"{c['messages'][-1]['content']}"
                                                                                    f" ({k})"}]}
             for k, c in enumerate(lines * 3)][:200]
    train_file = tmp_path / "big.jsonl"
    train_file.write_text("".join(json.dumps(c) + "\n" for c in chats), encoding="utf-8")
    rec = Recorder()
    result = train(make_config(n_epochs="auto", batch_size=32, training_file=train_file, max_length=64), rec)
    messages = [m for _, m, _ in rec.events]
    assert "No validation file: holding out 10 of 200 training examples (chosen by seed 1) to measure validation " \
           "loss" in messages
    assert rec.metrics[0]["total_steps"] == 3 * 6  # 190 examples left: batch 32 -> 6 steps, 3 epochs at most
    assert result.best_step is not None and _full(rec)  # validated on the held-out 10


def test_a_file_with_fewer_than_3_auto_epochs_trains_on_every_example_without_validation(make_config, tmp_path):
    line = (FIXTURES / "identity_chat.jsonl").read_text(encoding="utf-8").splitlines()[0]
    train_file = tmp_path / "larger.jsonl"
    train_file.write_text((line + "\n") * 700, encoding="utf-8")  # auto: 2 epochs (2000 // 700)
    rec = Recorder()
    result = train(make_config(n_epochs="auto", batch_size=64, training_file=train_file, max_length=64), rec)
    assert not any("holding out" in m or "n_epochs auto" in m for _, m, _ in rec.events)
    assert rec.metrics[0]["total_steps"] == 2 * 11  # all 700 examples: batch 64 -> 11 steps, 2 epochs
    assert result.best_step is None and not _full(rec)


def test_early_stopping_survives_a_pause_and_resume(make_config, tmp_path):
    valid = _valid(tmp_path)
    reference = Recorder()
    expected = train(make_config("ref", n_epochs="auto", validation_file=valid), reference)
    config = make_config("paused", n_epochs="auto", validation_file=valid)
    first = Recorder(act=lambda done: "pause" if done == 4 else "continue")  # after the first full validation
    assert train(config, first).status == "paused"
    second = Recorder()
    result = train(config, second)
    assert [m["step"] for m in second.metrics][0] == 5
    assert [m["step"] for m in result.metrics] == [m["step"] for m in expected.metrics]
    for key in ("train_loss", "full_valid_loss"):
        got = [m.get(key) for m in result.metrics if key in m]
        assert got == pytest.approx([m.get(key) for m in expected.metrics if key in m], rel=1e-6)
    assert (result.best_step, result.stopped_early) == (expected.best_step, True)
    assert result.best_valid_loss == pytest.approx(expected.best_valid_loss, rel=1e-6)
    want, got = _weights(expected.adapter_dir), _weights(result.adapter_dir)
    assert want.keys() == got.keys() and all(torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-7) for k in want)


def test_early_stopping_survives_a_sigkill_and_resume(make_config, tmp_path):
    valid = _valid(tmp_path)
    expected = train(make_config("ref", n_epochs="auto", validation_file=valid), Recorder())
    config = make_config("killed", n_epochs="auto", validation_file=valid, save_every_seconds=0)
    # the child hangs after step 4, past the first full validation (step 3), with the state saved
    kill_training_child_at_step_4(config, tmp_path / "child.jsonl")
    assert (config.output_dir / BEST_DIR).is_dir()
    result = train(config, Recorder())
    assert (result.best_step, result.stopped_early) == (expected.best_step, True)
    assert [m["step"] for m in result.metrics] == [m["step"] for m in expected.metrics]
    assert [m["train_loss"] for m in result.metrics] == pytest.approx([m["train_loss"] for m in expected.metrics],
                                                                      rel=1e-6)


def test_two_processes_stop_at_the_same_step_as_one(make_config, tmp_path):
    valid = _valid(tmp_path)
    one, two = Recorder(), Recorder()
    expected = train(make_config("one", n_epochs="auto", validation_file=valid), one)
    config = make_config("two", n_epochs="auto", validation_file=valid)
    result = run_distributed(Settings(data_dir=tmp_path / "data", train_processes="2"), config, two,
                             threading.Event())
    assert result.status == "succeeded" and (result.best_step, result.stopped_early) == (expected.best_step, True)
    assert [m["step"] for m in two.metrics] == [m["step"] for m in one.metrics]
    assert [m for _, m, _ in two.events] == [m for _, m, _ in one.events]  # reported once, by the main rank
    assert (config.output_dir / "adapter" / "adapter_model.safetensors").is_file()
