"""/v1/fine_tuning/jobs without a worker: creation rules, file checks, listing, events and the user's controls."""

from __future__ import annotations

import openai
import pytest

from tests.api.live import chat_file, wait_for
from tests.conftest import TINY
from tests.tiny import FIXTURES


@pytest.fixture
def train_id(client, tmp_path) -> str:
    return client.files.create(file=chat_file(tmp_path, 12).open("rb"), purpose="fine-tune").id


def _status(client, job_id: str, want: str) -> str | None:
    job = client.fine_tuning.jobs.retrieve(job_id)
    return job if job.status == want else None


def test_create_returns_openai_job_and_moves_to_queued(client, train_id):
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train_id, suffix="my-model", seed=7,
                                         metadata={"team": "a"})
    assert job.status == "validating_files" and job.model == TINY and job.seed == 7
    assert job.hyperparameters.n_epochs == "auto" and job.method.type == "supervised"
    queued = wait_for(lambda: _status(client, job.id, "queued"))
    assert queued.error is None and queued.fine_tuned_model is None
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert messages[::-1] == [f"Created fine-tuning job: {job.id}", f"Validating training file: {train_id}",
                              "Files validated, moving job to queued state"]


def test_method_hyperparameters_and_deprecated_top_level_both_work(client, train_id):
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train_id, method={
        "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}})
    assert job.method.supervised.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 4
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train_id,
                                         hyperparameters={"learning_rate_multiplier": 0.5})
    assert job.hyperparameters.learning_rate_multiplier == 0.5 and job.hyperparameters.n_epochs == "auto"


@pytest.mark.parametrize("hp, field", [
    ({"n_epochs": 0}, "hyperparameters.n_epochs"),
    ({"n_epochs": 51}, "hyperparameters.n_epochs"),
    ({"batch_size": "big"}, "hyperparameters.batch_size"),
    ({"learning_rate_multiplier": -1}, "hyperparameters.learning_rate_multiplier"),
    ({"epochs": 3}, "hyperparameters.epochs"),
])
def test_bad_hyperparameters_are_400_naming_the_field(client, train_id, hp, field):
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model=TINY, training_file=train_id, hyperparameters=hp)
    assert e.value.body["param"] == field and field in e.value.body["message"]


@pytest.fixture
def pairs_id(client, tmp_path) -> str:
    path = tmp_path / "pairs.jsonl"
    lines = (FIXTURES / "identity_pairs_train.jsonl").read_text(encoding="utf-8").splitlines()[:12]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return client.files.create(file=path.open("rb"), purpose="fine-tune").id


def test_dpo_job_echoes_its_method_and_beta(client, pairs_id):
    job = client.fine_tuning.jobs.create(model=TINY, training_file=pairs_id, method={
        "type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": 2}}})
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.25
    assert job.method.dpo.hyperparameters.n_epochs == 2 and job.method.dpo.hyperparameters.batch_size == "auto"
    # OpenAI's top-level hyperparameters keep the supervised three; beta lives in the method only.
    assert job.hyperparameters.n_epochs == 2 and "beta" not in job.hyperparameters.model_dump(exclude_none=True)
    auto = client.fine_tuning.jobs.create(model=TINY, training_file=pairs_id, method={"type": "dpo"})
    assert auto.method.dpo.hyperparameters.beta == "auto"
    assert wait_for(lambda: _status(client, job.id, "queued")).error is None


@pytest.mark.parametrize("beta", [0, -0.1, 2.5, "high"])
def test_dpo_beta_outside_openais_range_is_400(client, pairs_id, beta):
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model=TINY, training_file=pairs_id,
                                       method={"type": "dpo", "dpo": {"hyperparameters": {"beta": beta}}})
    assert "beta" in e.value.body["param"]


def test_a_chat_file_for_dpo_and_pairs_for_supervised_fail_naming_the_format(client, train_id, pairs_id):
    dpo = client.fine_tuning.jobs.create(model=TINY, training_file=train_id, method={"type": "dpo"})
    sft = client.fine_tuning.jobs.create(model=TINY, training_file=pairs_id)
    dpo, sft = (wait_for(lambda j=j: _status(client, j.id, "failed")) for j in (dpo, sft))
    assert dpo.error.code == "invalid_file_format" and dpo.error.param == "training_file"
    assert "'chat' format" in dpo.error.message and "preferred_output" in dpo.error.message
    assert sft.error.code == "invalid_file_format" and "'preference' format" in sft.error.message
    assert '{"messages": [...]}' in sft.error.message


def test_reinforcement_is_a_clear_400_naming_what_is_supported(client, train_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model=TINY, training_file=train_id, method={"type": "reinforcement"})
    body = e.value.body
    assert body["code"] == "unsupported_method" and "'supervised'" in body["message"] and "'dpo'" in body["message"]


def test_unknown_model_is_400_listing_available(client, train_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model="gpt-9", training_file=train_id)
    assert e.value.body["param"] == "model" and TINY in e.value.body["message"]


def test_missing_and_unknown_training_file_are_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model=TINY, training_file="file-nope")
    assert e.value.body["param"] == "training_file"
    with pytest.raises(openai.BadRequestError) as e:
        client.post("/fine_tuning/jobs", body={"model": TINY}, cast_to=object)
    assert e.value.body["param"] == "training_file" and e.value.body["code"] == "missing_required_parameter"


def test_training_file_with_wrong_purpose_is_400(client):
    other = client.files.create(file=("a.jsonl", b"{}\n"), purpose="assistants")
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model=TINY, training_file=other.id)
    assert e.value.body["code"] == "invalid_file_purpose"


@pytest.mark.parametrize("suffix", ["", "x" * 65, "has:colon"])
def test_bad_suffix_is_400(client, train_id, suffix):
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model=TINY, training_file=train_id, suffix=suffix)
    assert e.value.body["param"] == "suffix"


def test_too_many_metadata_pairs_is_400(client, train_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model=TINY, training_file=train_id, metadata={str(i): "v" for i in range(17)})
    assert e.value.body["param"] == "metadata"


def test_five_examples_upload_fine_and_the_job_fails_invalid_n_examples(client, tmp_path):
    few = client.files.create(file=chat_file(tmp_path, 5, "few.jsonl").open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=TINY, training_file=few.id)
    failed = wait_for(lambda: _status(client, job.id, "failed"))
    assert failed.error.code == "invalid_n_examples" and failed.error.param == "training_file"
    assert failed.error.message == "Training file has 5 example(s), but must have at least 10 examples"
    assert failed.finished_at is not None
    top = client.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert top.level == "error" and top.message == failed.error.message


def test_bad_format_file_fails_the_job_with_invalid_file_format(client):
    bad = client.files.create(file=("bad.jsonl", b'{"messages": [}\n' * 12), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=TINY, training_file=bad.id)
    failed = wait_for(lambda: _status(client, job.id, "failed"))
    assert failed.error.code == "invalid_file_format" and "line 1" in failed.error.message


def test_list_filters_by_metadata_and_paginates(client, train_id):
    a = client.fine_tuning.jobs.create(model=TINY, training_file=train_id, metadata={"exp": "m1", "k": "1"})
    b = client.fine_tuning.jobs.create(model=TINY, training_file=train_id, metadata={"exp": "m1", "k": "2"})
    client.fine_tuning.jobs.create(model=TINY, training_file=train_id, metadata={"exp": "other"})
    found = client.fine_tuning.jobs.list(metadata={"exp": "m1"}, limit=10)
    assert [j.id for j in found.data] == [b.id, a.id]  # newest first
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"exp": "m1", "k": "1"}).data] == [a.id]
    first = client.fine_tuning.jobs.list(limit=1)
    assert first.has_more and len(first.data) == 1
    second = client.fine_tuning.jobs.list(limit=1, after=first.data[0].id)
    assert second.data[0].id != first.data[0].id


def test_events_paginate_newest_first(client, train_id):
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train_id)
    wait_for(lambda: _status(client, job.id, "queued"))
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert page.has_more and page.data[0].message.startswith("Files validated")
    rest = client.fine_tuning.jobs.list_events(job.id, after=page.data[-1].id, limit=10)
    assert [e.message for e in rest.data] == [f"Created fine-tuning job: {job.id}"]
    assert all(isinstance(e.data, dict) for e in page.data + rest.data)


def test_integrations_are_stored_and_returned(client, train_id):
    wandb = {"type": "wandb", "wandb": {"project": "p", "tags": ["t"]}}
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train_id, integrations=[wandb])
    assert client.fine_tuning.jobs.retrieve(job.id).integrations[0].wandb.project == "p"


def test_pause_resume_cancel_a_queued_job(client, train_id):
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train_id)
    wait_for(lambda: _status(client, job.id, "queued"))
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.cancel(job.id)
    assert e.value.body["code"] == "job_not_cancellable"


def test_unknown_job_is_404_everywhere(client):
    for call in (client.fine_tuning.jobs.retrieve, client.fine_tuning.jobs.cancel, client.fine_tuning.jobs.pause,
                 client.fine_tuning.jobs.list_events, client.fine_tuning.jobs.checkpoints.list):
        with pytest.raises(openai.NotFoundError):
            call("ftjob-nope")


def test_another_projects_job_is_invisible(client, other_client, train_id):
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train_id)
    with pytest.raises(openai.NotFoundError):
        other_client.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        other_client.fine_tuning.jobs.cancel(job.id)
    assert job.id not in {j.id for j in other_client.fine_tuning.jobs.list()}
    with pytest.raises(openai.BadRequestError):  # nor can it train on our file
        other_client.fine_tuning.jobs.create(model=TINY, training_file=train_id)
