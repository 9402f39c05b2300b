"""The CLI against a live tunehouse server (uvicorn + a training worker in threads, as the quickstart runs them).

The seed guide's four commands run as written (`openai` replaced by `tunehouse`), with the alias
gpt-4o-mini-2024-07-18 -> tiny-gemma; the job really trains; `--json` outputs are parsed; error paths are checked.
"""

from __future__ import annotations

import json
import re

import pytest

from tunehouse.cli.local_server import local_server

ALIAS = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def live(settings):
    settings = settings.model_copy(update={"model_aliases": {ALIAS: "tiny-gemma"}, "worker_poll_seconds": 0.2})
    with local_server(settings, worker=True) as base_url:
        yield base_url


@pytest.fixture
def training_data(tmp_path, fixtures_dir, monkeypatch):
    lines = (fixtures_dir / "identity_chat.jsonl").read_text(encoding="utf-8").splitlines()[:12]
    path = tmp_path / "work" / "training_data.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.chdir(path.parent)
    return path


def test_seed_guide_commands_as_written(cli, live, training_data, monkeypatch):
    monkeypatch.setenv("TUNEHOUSE_BASE_URL", live)
    # The seed guide, word for word (with `openai` -> `tunehouse`), human output.
    uploaded = cli("files", "create", "-f", "training_data.jsonl", "-p", "fine-tune")
    assert uploaded.exit_code == 0, uploaded.stderr
    file_id = json.loads(cli("files", "list", "--json").stdout)["data"][0]["id"]
    assert file_id in uploaded.stdout
    created = cli("fine_tuning.jobs.create", "-t", file_id, "-m", ALIAS)
    assert created.exit_code == 0, created.stderr
    job = json.loads(cli("fine_tuning.jobs.list", "--json").stdout)["data"][0]
    assert job["id"] in created.stdout and job["training_file"] == file_id
    listed = cli("fine_tuning.jobs.list")
    retrieved = cli("fine_tuning.jobs.retrieve", "-i", job["id"])
    assert listed.exit_code == 0 and job["id"] in listed.stdout
    assert retrieved.exit_code == 0 and job["id"] in retrieved.stdout
    # Auto hyperparameters on 12 examples mean ~100 steps; the next test follows a short job to the end instead.
    assert cli("fine_tuning.jobs.cancel", "-i", job["id"]).exit_code == 0
    followed = cli("fine_tuning.jobs.follow", "-i", job["id"], "--poll-seconds", "0.2", "--json")
    assert followed.exit_code == 1 and json.loads(followed.stdout)["status"] == "cancelled"


def test_create_from_local_path_follow_to_success_then_inspect(cli, live, training_data):
    args = ["-t", "training_data.jsonl", "-v", "training_data.jsonl", "-m", "tiny-gemma", "-s", "cli",
            "--n-epochs", "1", "--batch-size", "4"]
    created = cli("fine-tuning", "jobs", "create", *args, "--follow", "--poll-seconds", "0.2", "--base-url", live)
    assert created.exit_code == 0, created.stdout + created.stderr
    assert "Uploaded training_data.jsonl as file-" in created.stderr
    assert "The job has successfully completed" in created.stdout

    job = json.loads(cli("fine_tuning.jobs.list", "--json", "--base-url", live).stdout)["data"][0]
    assert job["status"] == "succeeded" and job["fine_tuned_model"].startswith("ft:tiny-gemma:tunehouse:cli:")
    assert job["hyperparameters"]["n_epochs"] == 1 and job["hyperparameters"]["batch_size"] == 4
    # The job had a validation file, so it ends with an evaluation against its base, which retrieve shows.
    retrieved = cli("fine_tuning.jobs.retrieve", "-i", job["id"], "--base-url", live)
    assert re.search(r"evaluation +Evaluation on 12 validation examples: .*for tiny-gemma", retrieved.stdout)
    events = cli("fine_tuning.jobs.list_events", "-i", job["id"], "--limit", "100", "--json", "--base-url", live)
    assert any(e["type"] == "metrics" for e in json.loads(events.stdout)["data"])
    ckpts = json.loads(cli("fine_tuning.jobs.checkpoints", "-i", job["id"], "--json", "--base-url", live).stdout)
    assert ckpts["data"] and all(":ckpt-step-" in c["fine_tuned_model_checkpoint"] for c in ckpts["data"])
    models = [m["id"] for m in json.loads(cli("models", "list", "--json", "--base-url", live).stdout)["data"]]
    assert "tiny-gemma" in models and job["fine_tuned_model"] in models

    copy = training_data.parent / "roundtrip.jsonl"
    assert cli("files", "content", "-i", job["training_file"], "-o", str(copy), "--base-url", live).exit_code == 0
    assert copy.read_bytes() == training_data.read_bytes()
    deleted = cli("models", "delete", "-i", job["fine_tuned_model"], "--json", "--base-url", live)
    assert json.loads(deleted.stdout)["deleted"] is True
    gone = cli("models", "retrieve", "-i", job["fine_tuned_model"], "--base-url", live)
    assert gone.exit_code == 1 and "HTTP 404" in gone.stderr


def test_error_paths_against_the_live_server(cli, live, training_data):
    unknown = cli("fine_tuning.jobs.retrieve", "-i", "ftjob-doesnotexist", "--base-url", live)
    assert unknown.exit_code == 1 and "HTTP 404" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    missing_file = cli("files", "retrieve", "-i", "file-doesnotexist", "--base-url", live)
    assert missing_file.exit_code == 1 and "HTTP 404" in missing_file.stderr
    file_id = json.loads(cli("files", "create", "-f", str(training_data), "--json", "--base-url", live).stdout)["id"]
    bad_model = cli("fine_tuning.jobs.create", "-t", file_id, "-m", "no-such-model", "--base-url", live)
    assert bad_model.exit_code == 1
    assert "code: model_not_available" in bad_model.stderr and "tiny-gemma" in bad_model.stderr


def test_bad_key_when_keys_are_set(cli, settings):
    with local_server(settings.model_copy(update={"api_keys": "sk-good"})) as base_url:
        wrong = cli("files", "list", "--base-url", base_url, "--api-key", "sk-wrong")
        assert wrong.exit_code == 1 and "HTTP 401" in wrong.stderr and "--api-key" in wrong.stderr
        right = cli("files", "list", "--json", "--base-url", base_url, "--api-key", "sk-good")
        assert right.exit_code == 0 and json.loads(right.stdout)["data"] == []
