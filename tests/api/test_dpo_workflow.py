"""DPO end to end through the official SDK with the REAL engine on the tiny model: SFT first, then DPO on the
SFT model, and DPO straight from a base; every response checked against OpenAI's schemas."""

from __future__ import annotations

import csv
import io

import pytest

from tests.api.live import LiveServer, SchemaLog, chat_file, make_data_dir, sdk_client, wait_for
from tests.conftest import TINY
from tests.tiny import FIXTURES

DPO_COLUMNS = ["step", "train_loss", "train_rewards_accuracy", "train_rewards_margin", "train_chosen_logps",
               "train_rejected_logps", "valid_loss", "valid_rewards_accuracy", "valid_rewards_margin",
               "valid_chosen_logps", "valid_rejected_logps"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    srv = LiveServer(make_data_dir(tmp_path_factory.mktemp("dpo"), tiny_model_dir), worker=True).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def log():
    return SchemaLog()


@pytest.fixture(scope="module")
def client(server, log):
    return sdk_client(server, log)


def _upload_pairs(client, tmp, name: str, start: int, n: int) -> str:
    lines = (FIXTURES / "identity_pairs_train.jsonl").read_text(encoding="utf-8").splitlines()[start:start + n]
    path = tmp / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return client.files.create(file=path.open("rb"), purpose="fine-tune").id


def _finish(client, job_id: str):
    return wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in ("succeeded", "failed") and j,
                    timeout=300)


@pytest.fixture(scope="module")
def jobs(client, tmp_path_factory):
    """An SFT job, then DPO on its model (with validation pairs), and DPO from the base: all run to the end."""
    tmp = tmp_path_factory.mktemp("files")
    chats = client.files.create(file=chat_file(tmp, 12).open("rb"), purpose="fine-tune").id
    sft = _finish(client, client.fine_tuning.jobs.create(model=TINY, training_file=chats, suffix="sft",
                                                         hyperparameters={"n_epochs": 1, "batch_size": 4}).id)
    assert sft.status == "succeeded", sft.error
    pairs, held_out = _upload_pairs(client, tmp, "pairs.jsonl", 0, 12), _upload_pairs(client, tmp, "v.jsonl", 40, 4)
    method = {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "batch_size": 4,
                                                         "learning_rate_multiplier": 20}}}
    on_sft = client.fine_tuning.jobs.create(model=sft.fine_tuned_model, training_file=pairs, validation_file=held_out,
                                            suffix="dpo", seed=5, method=method)
    from_base = client.fine_tuning.jobs.create(model=TINY, training_file=pairs, method={"type": "dpo"})
    return sft, _finish(client, on_sft.id), _finish(client, from_base.id)


def test_dpo_jobs_succeed_from_an_ft_model_and_from_a_base(jobs, log):
    sft, on_sft, from_base = jobs
    assert on_sft.status == "succeeded", on_sft.error
    assert from_base.status == "succeeded", from_base.error
    assert on_sft.model == sft.fine_tuned_model and on_sft.fine_tuned_model.startswith(f"ft:{TINY}:tunehouse:dpo:")
    hp = on_sft.method.dpo.hyperparameters
    assert on_sft.method.type == "dpo" and (hp.n_epochs, hp.batch_size, hp.beta) == (2, 4, 0.1)
    auto = from_base.method.dpo.hyperparameters  # every "auto" resolved once training ran, beta included
    assert auto.beta == 0.1 and isinstance(auto.n_epochs, int) and isinstance(auto.batch_size, int)
    assert on_sft.trained_tokens > 0
    assert log.problems == []


def test_dpo_metrics_are_in_events_and_the_results_csv(client, jobs, log):
    _, job, _ = jobs
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=200))
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all("rewards accuracy=" in e.message for e in metrics)
    assert {"train_rewards_accuracy", "train_rewards_margin", "train_chosen_logps"} <= set(metrics[0].data)
    assert any(e.message.startswith("Training 12 preference pairs (DPO, beta 0.1)") for e in events)
    rows = list(csv.DictReader(io.StringIO(client.files.content(job.result_files[0]).text)))
    assert list(rows[0])[:len(DPO_COLUMNS)] == DPO_COLUMNS and [int(r["step"]) for r in rows] == list(range(1, 7))
    assert any(r["valid_rewards_accuracy"] != "" for r in rows)
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and "full_valid_rewards_accuracy" in checkpoints[0].metrics.model_dump()
    assert log.problems == []


def test_the_dpo_model_chats_with_its_own_adapter(client, jobs, log):
    _, job, _ = jobs
    question = [{"role": "user", "content": "Who are you?"}]
    reply = client.chat.completions.create(model=job.fine_tuned_model, messages=question, max_tokens=8,
                                           temperature=0, logprobs=True)
    assert reply.model == job.fine_tuned_model and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens >= 1
    # The tiny model is random, so its words mean nothing; what must hold is that the DPO adapter is served
    # (not silently the base): the first token's log-probability differs from the base model's.
    base = client.chat.completions.create(model=TINY, messages=question, max_tokens=1, temperature=0, logprobs=True)
    assert reply.choices[0].logprobs.content[0].logprob != pytest.approx(base.choices[0].logprobs.content[0].logprob)
    assert log.problems == []
