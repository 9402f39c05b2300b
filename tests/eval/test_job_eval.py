"""Evaluation inside a job: a real tiny LoRA adapter (trained by the engine) vs its base, in-process."""

import json
import math
import shutil

import pytest

from tests.tiny import FIXTURES
from tunehouse.eval.comparison import EvalError, EvalOptions, evaluate
from tunehouse.eval.job_eval import InProcessBackend, evaluate_job, evaluation_event


class _Quiet:
    def on_event(self, level, message, data):
        pass

    def on_metrics(self, metrics):
        pass

    def on_checkpoint(self, checkpoint):
        pass

    def control(self):
        return "continue"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A tiny model registered in a data dir and an adapter trained on identity chats for a few epochs."""
    from tunehouse.catalog import add_base_model
    from tunehouse.config import Settings
    from tunehouse.training.config import TrainingConfig
    from tunehouse.training.engine import train

    root = tmp_path_factory.mktemp("job-eval")
    settings = Settings(data_dir=root / "data", default_base_model="tiny-gemma")
    add_base_model(settings, "tiny-gemma", tiny_model_dir, family="gemma")
    train_file = root / "train.jsonl"
    lines = (FIXTURES / "identity_chat.jsonl").read_text(encoding="utf-8").splitlines()[:12]
    train_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = TrainingConfig(base_model="tiny-gemma", base_model_dir=tiny_model_dir, training_file=train_file,
                            output_dir=root / "job", n_epochs=4, batch_size=4, learning_rate_multiplier=4.0,
                            device="cpu")
    result = train(config, _Quiet())
    assert result.status == "succeeded"
    test_file = root / "test.jsonl"
    shutil.copyfile(train_file, test_file)
    return settings, result.adapter_dir, test_file


def test_in_process_backend_answers_with_token_counts(trained):
    settings, adapter, test_file = trained
    backend = InProcessBackend(settings, {"tuned": ("tiny-gemma", adapter), "base": ("tiny-gemma", None)})
    gen = backend.generate("tuned", [{"role": "user", "content": "hi"}], max_tokens=5, temperature=0.0)
    assert 1 <= gen.completion_tokens <= 5 and gen.prompt_tokens > 3 and gen.latency_s > 0
    assert gen.finish_reason in ("stop", "length")


def test_training_lowers_the_reference_loss_measured_in_process(trained):
    settings, adapter, test_file = trained
    backend = InProcessBackend(settings, {"tuned": ("tiny-gemma", adapter), "base": ("tiny-gemma", None)})
    result = evaluate(backend, "tuned", "base", test_file, EvalOptions(max_tokens=2), max_examples=6)
    tuned, base = result.model_run.metrics["loss"], result.baseline_run.metrics["loss"]
    assert tuned is not None and base is not None and tuned < base
    # A random tiny base is close to uniform over its vocabulary: loss near ln(vocab).
    assert base > 0.5 * math.log(600)


def test_unknown_model_is_rejected_before_running(trained):
    settings, adapter, test_file = trained
    backend = InProcessBackend(settings, {"base": ("tiny-gemma", None)})
    with pytest.raises(EvalError, match="not one of"):
        evaluate(backend, "nope", "base", test_file)


def test_evaluate_job_writes_a_report_and_an_event(trained, tmp_path):
    settings, adapter, test_file = trained
    result = evaluate_job(settings, "tiny-gemma", adapter, test_file, tmp_path / "eval", model_id="ft:tiny",
                          max_examples=3, options=EvalOptions(max_tokens=4))
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["n"] == 3 and report["model_id"] == "ft:tiny" and report["baseline_id"] == "tiny-gemma"
    message, data = evaluation_event(result)
    assert message.startswith("Evaluation on 3 validation examples: exact match")
    assert "reference loss" in message and data["model"]["exact_match"] is not None
