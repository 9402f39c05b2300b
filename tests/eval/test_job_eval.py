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


@pytest.fixture(scope="module")
def dpo_trained(trained, tiny_model_dir):
    """A DPO adapter on the tiny model, trained on 8 identity pairs (the preferred output names Gemma-FT by
    LocalLab, the non-preferred Gemma by Google DeepMind), and those pairs as the job's validation file."""
    from tunehouse.training.config import TrainingConfig
    from tunehouse.training.engine import train

    settings, _, _ = trained
    pairs = settings.data_dir.parent / "pairs.jsonl"
    lines = (FIXTURES / "identity_pairs_heldout.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = TrainingConfig(base_model="tiny-gemma", base_model_dir=tiny_model_dir,
                            training_file=pairs, output_dir=settings.data_dir.parent / "dpo-job", method="dpo",
                            beta=0.1, n_epochs=4, batch_size=4, learning_rate_multiplier=10.0, max_length=128,
                            seed=1, device="cpu")
    result = train(config, _Quiet())
    assert result.status == "succeeded"
    return settings, result.adapter_dir, pairs


def test_a_dpo_jobs_validation_pairs_are_scored_in_process(dpo_trained, tmp_path):
    settings, adapter, pairs = dpo_trained
    result = evaluate_job(settings, "tiny-gemma", adapter, pairs, tmp_path / "eval", model_id="ft:dpo")
    s = result.summary()
    assert s["n"] == 8 and result.is_preference
    assert s["model"]["preference_margin"] > s["baseline"]["preference_margin"] + 1.0  # DPO raised the margin
    assert s["model"]["preference_accuracy"] >= s["baseline"]["preference_accuracy"]
    message, data = evaluation_event(result)
    acc = "preference_accuracy"
    assert message.startswith(f"Evaluation on 8 validation pairs: preference accuracy "
                              f"{100 * s['model'][acc]:.1f}% vs {100 * s['baseline'][acc]:.1f}% for tiny-gemma (")
    assert "preference margin" in message and data["model"][acc] == s["model"][acc]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["test_format"] == "preference" and len(report["examples"]) == 8


def test_in_process_pair_scores_equal_training_sequence_logps(dpo_trained):
    """The pair is rendered and its tokens counted exactly as DPO training does (same log-probs of the base)."""
    import torch

    from tunehouse.base_models import load_base_model
    from tunehouse.training.batches import encode_file
    from tunehouse.training.loss import sequence_logps

    settings, adapter, pairs = dpo_trained
    backend = InProcessBackend(settings, {"base": ("tiny-gemma", None)})
    result = evaluate(backend, "base", "base", pairs, max_examples=3)
    model, tok, family = load_base_model(settings, "tiny-gemma", torch.device("cpu"), torch.float32)
    encoded = encode_file(pairs, lambda t: tok.encode(t, add_special_tokens=False), family, 1024, method="dpo")
    with torch.no_grad():
        for score, pair in zip(result.model_run.pair_scores, encoded[:3], strict=True):
            for logp, n, side in ((score.logp_preferred, score.preferred_tokens, pair.chosen),
                                  (score.logp_non_preferred, score.non_preferred_tokens, pair.rejected)):
                ids = torch.tensor([side.input_ids])
                expected = float(sequence_logps(model, ids, torch.ones_like(ids), torch.tensor([side.labels])))
                assert logp == pytest.approx(expected, rel=1e-4, abs=1e-3)
                assert n == sum(label != -100 for label in side.labels)
