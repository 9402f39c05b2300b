"""The training loop on the tiny model: learning, adapters, checkpoints, events, control, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from tests.training.conftest import Recorder, write_examples
from tunehouse.training.engine import train


def test_loss_goes_down(make_config):
    rec = Recorder()
    result = train(make_config(n_epochs=4), rec)
    losses = rec.losses()
    assert result.status == "succeeded" and len(losses) == 4 * 3
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3  # last epoch vs first epoch


def test_only_lora_weights_train(make_config):
    from tunehouse.training.engine import _prepare, _train_step

    run = _prepare(make_config(), Recorder())
    trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    _train_step(run, [0, 1], 1e-2)
    after = dict(run.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= trainable


def test_adapter_loads_in_plain_peft_with_the_same_loss(make_config, tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunehouse.data.render import encode_example

    valid = write_examples(tmp_path / "valid.jsonl", 1)
    rec = Recorder()
    result = train(make_config(validation_file=valid), rec)
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert json.loads((result.adapter_dir / "training_config.json").read_text())["batch_size"] == 4

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids, labels, _ = encode_example(json.loads(valid.read_text()), lambda s: tok.encode(s, add_special_tokens=False),
                                    "gemma", 128)
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss  # full-vocabulary loss
    assert rec.checkpoints[-1].metrics["full_valid_loss"] == pytest.approx(float(loss), rel=1e-5)
    with torch.no_grad(), model.disable_adapter():
        base_loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
    assert abs(float(base_loss) - float(loss)) > 1e-3  # the adapter really changes the model


def test_same_seed_same_loss_curve(make_config):
    a, b = Recorder(), Recorder()
    train(make_config("a"), a)
    train(make_config("b"), b)
    assert a.losses() == b.losses()


def test_other_seed_other_curve(make_config):
    a, b = Recorder(), Recorder()
    train(make_config("a", n_epochs=1), a)
    train(make_config("b", n_epochs=1, seed=2), b)
    assert a.losses() != b.losses()


def test_cancel_stops_within_one_step(make_config):
    rec = Recorder(act=lambda done: "cancel" if done >= 2 else "continue")
    result = train(make_config(), rec)
    assert result.status == "cancelled" and result.adapter_dir is None
    assert len(rec.metrics) == 2


def test_checkpoint_each_epoch_keeps_the_last_n(make_config, tmp_path):
    valid = write_examples(tmp_path / "valid.jsonl", 2)
    rec = Recorder()
    config = make_config(n_epochs=3, keep_checkpoints=2, validation_file=valid)
    train(config, rec)
    assert [c.step for c in rec.checkpoints] == [3, 6, 9]
    assert sorted(p.name for p in (config.output_dir / "checkpoints").iterdir()) == ["step-6", "step-9"]
    assert set(rec.checkpoints[-1].metrics) == {"step", "train_loss", "train_mean_token_accuracy", "valid_loss",
                                                "valid_mean_token_accuracy", "full_valid_loss",
                                                "full_valid_mean_token_accuracy"}
    assert (rec.checkpoints[-1].adapter_dir / "adapter_model.safetensors").is_file()


def test_metrics_each_step(make_config):
    rec = Recorder()
    train(make_config(), rec)
    assert [m["step"] for m in rec.metrics] == list(range(1, 7))
    assert all(m["total_steps"] == 6 and 0 <= m["train_mean_token_accuracy"] <= 1 for m in rec.metrics)


def test_truncation_is_a_warn_event(make_config):
    rec = Recorder()
    train(make_config(max_length=24, n_epochs=1), rec)
    warns = [e for e in rec.events if e[0] == "warn"]
    assert warns and "truncated" in warns[0][1]


def test_init_adapter_continues_training(make_config, recwarn):
    first = train(make_config("first", n_epochs=4), Recorder())
    fresh, cont = Recorder(), Recorder()
    train(make_config("fresh", n_epochs=1), fresh)
    train(make_config("cont", n_epochs=1, init_adapter=first.adapter_dir), cont)
    assert cont.losses()[0] < fresh.losses()[0] - 0.1
    # Both ways of wrapping the model (new LoRA, loaded adapter) keep peft's deprecation noise out of job logs.
    assert not [w for w in recwarn if "is_gradient_checkpointing" in str(w.message)]


def test_auto_hyperparameters_are_resolved(make_config):
    config = make_config(n_epochs="auto", batch_size="auto", learning_rate_multiplier="auto")
    result = train(config, Recorder(act=lambda done: "cancel" if done else "continue"))
    assert result.hyperparameters == {"n_epochs": 8, "batch_size": 1, "learning_rate_multiplier": 2.5}


def test_a_base_model_dir_that_is_no_model_is_a_clear_error(make_config, tmp_path):
    with pytest.raises(ValueError, match="not a Hugging Face model directory"):
        train(make_config(base_model_dir=tmp_path), Recorder())


def test_bad_training_file_is_a_clear_error(make_config, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        train(make_config(training_file=bad), Recorder())


def test_bf16_precision_trains_fp32_lora_on_a_bf16_base(make_config):
    """train_precision bf16 (the fast path on AMX CPUs): the frozen base is bf16, the LoRA weights it learns
    stay fp32, the loss still falls, and the saved adapter is fp32."""
    from safetensors.torch import load_file

    from tunehouse.training.engine import _prepare

    run = _prepare(make_config(precision="bf16"), Recorder())
    dtypes = {p.dtype for n, p in run.model.named_parameters() if not p.requires_grad}
    assert dtypes == {torch.bfloat16}
    assert {p.dtype for p in run.params} == {torch.float32}
    rec = Recorder()
    result = train(make_config(n_epochs=4, precision="bf16"), rec)
    losses = rec.losses()
    assert result.status == "succeeded"
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    weights = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
    saved = json.loads((result.adapter_dir / "training_config.json").read_text())
    assert (saved["precision"], saved["base_dtype"]) == ("bf16", "bfloat16")
    assert any("base weights in bfloat16" in m for _, m, _ in rec.events)


def test_an_unknown_training_precision_is_a_clear_error(make_config):
    with pytest.raises(ValueError, match="Unknown training precision 'fp8'"):
        train(make_config(precision="fp8"), Recorder())
