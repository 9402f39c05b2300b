"""CLI commands against the HTTP double: what goes over the wire, both spellings, --json, and error lines."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import FILE, JOB
from tests.cli.double import error_body


def test_seed_guide_files_create_uploads_basename_and_purpose(api, cli, tmp_path, monkeypatch):
    data = tmp_path / "training_data.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    api.on("POST", "/v1/files", (200, FILE))
    monkeypatch.chdir(tmp_path)
    result = cli("files", "create", "-f", "training_data.jsonl", "-p", "fine-tune", "--base-url", api.base_url)
    assert result.exit_code == 0, result.stderr
    body = api.requests[0].body
    assert b'name="purpose"\r\n\r\nfine-tune' in body
    assert b'filename="training_data.jsonl"' in body
    assert data.read_bytes() in body
    assert "file-abc123" in result.stdout


def test_seed_guide_jobs_create_sends_model_and_file_id(api, cli):
    api.on("POST", "/v1/fine_tuning/jobs", (200, JOB))
    result = cli(
        "fine_tuning.jobs.create", "-t", "file-abc123", "-m", "gpt-4o-mini-2024-07-18", "--base-url", api.base_url
    )
    assert result.exit_code == 0, result.stderr
    assert api.requests[0].json() == {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-abc123"}
    assert "ftjob-abc123" in result.stdout


def test_seed_guide_jobs_list_and_retrieve(api, cli):
    api.on("GET", "/v1/fine_tuning/jobs", (200, {"object": "list", "data": [JOB], "has_more": False}))
    api.on("GET", "/v1/fine_tuning/jobs/ft-job-id", (200, JOB | {"id": "ft-job-id"}))
    listed = cli("fine_tuning.jobs.list", "--base-url", api.base_url)
    retrieved = cli("fine_tuning.jobs.retrieve", "-i", "ft-job-id", "--base-url", api.base_url)
    assert listed.exit_code == 0 and "ftjob-abc123" in listed.stdout
    assert retrieved.exit_code == 0 and "ft-job-id" in retrieved.stdout
    assert api.calls() == [("GET", "/v1/fine_tuning/jobs"), ("GET", "/v1/fine_tuning/jobs/ft-job-id")]


SPELLINGS = [["fine_tuning.jobs.{a}"], ["fine-tuning", "jobs", "{a}"], ["fine_tuning", "jobs", "{a}"]]
ACTIONS = [
    ("retrieve", "GET", "/v1/fine_tuning/jobs/ftjob-abc123"),
    ("cancel", "POST", "/v1/fine_tuning/jobs/ftjob-abc123/cancel"),
    ("pause", "POST", "/v1/fine_tuning/jobs/ftjob-abc123/pause"),
    ("resume", "POST", "/v1/fine_tuning/jobs/ftjob-abc123/resume"),
    ("list_events", "GET", "/v1/fine_tuning/jobs/ftjob-abc123/events"),
    ("checkpoints", "GET", "/v1/fine_tuning/jobs/ftjob-abc123/checkpoints"),
]


@pytest.mark.parametrize("spelling", SPELLINGS, ids=lambda s: " ".join(s))
@pytest.mark.parametrize("action,method,path", ACTIONS)
def test_every_spelling_sends_the_same_request(api, cli, spelling, action, method, path):
    empty_list = {"object": "list", "data": [], "has_more": False}
    api.on(method, path, (200, empty_list if method == "GET" and path.count("/") > 4 else JOB))
    words = [w.format(a=action) for w in spelling]
    result = cli(*words, "-i", "ftjob-abc123", "--base-url", api.base_url)
    assert result.exit_code == 0, result.stderr
    assert api.calls() == [(method, path)]


def test_hyperparameters_go_in_the_supervised_method(api, cli):
    api.on("POST", "/v1/fine_tuning/jobs", (200, JOB))
    args = ["-t", "file-abc123", "-m", "tiny", "-v", "file-val", "-s", "demo", "--n-epochs", "3"]
    args += ["--batch-size", "4", "--learning-rate-multiplier", "0.5", "--seed", "7", "--metadata", "team=nlp"]
    assert cli("fine-tuning", "jobs", "create", *args, "--base-url", api.base_url).exit_code == 0
    assert api.requests[0].json() == {
        "model": "tiny",
        "training_file": "file-abc123",
        "validation_file": "file-val",
        "suffix": "demo",
        "seed": 7,
        "metadata": {"team": "nlp"},
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 0.5}},
        },
    }


def test_method_dpo_sends_the_dpo_method_with_beta(api, cli):
    api.on("POST", "/v1/fine_tuning/jobs", (200, JOB))
    assert cli("fine_tuning.jobs.create", "-t", "file-abc123", "-m", "tiny", "--method", "dpo",
               "--base-url", api.base_url).exit_code == 0
    assert cli("fine_tuning.jobs.create", "-t", "file-abc123", "-m", "tiny", "--method", "dpo", "--beta", "0.3",
               "--n-epochs", "2", "--base-url", api.base_url).exit_code == 0
    assert api.requests[0].json()["method"] == {"type": "dpo", "dpo": {"hyperparameters": {}}}
    assert api.requests[1].json()["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2,
                                                                                         "beta": 0.3}}}


@pytest.mark.parametrize("args, why", [(["--method", "rl"], "--method must be"),
                                       (["--beta", "0.3"], "--beta applies to --method dpo only")])
def test_bad_method_options_are_one_line_and_send_nothing(api, cli, args, why):
    result = cli("fine_tuning.jobs.create", "-t", "file-abc123", "-m", "tiny", *args, "--base-url", api.base_url)
    assert result.exit_code != 0 and why in result.stderr and api.requests == []


def test_local_training_path_is_uploaded_first(api, cli, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": []}\n')
    api.on("POST", "/v1/files", (200, FILE | {"id": "file-uploaded"}))
    api.on("POST", "/v1/fine_tuning/jobs", (200, JOB))
    result = cli("fine_tuning.jobs.create", "-t", str(data), "-m", "tiny", "--base-url", api.base_url)
    assert result.exit_code == 0, result.stderr
    assert api.calls() == [("POST", "/v1/files"), ("POST", "/v1/fine_tuning/jobs")]
    assert api.requests[1].json()["training_file"] == "file-uploaded"


def test_missing_local_path_is_a_clear_error_without_a_request(api, cli):
    result = cli("fine_tuning.jobs.create", "-t", "nope/train.jsonl", "-m", "tiny", "--base-url", api.base_url)
    assert result.exit_code == 1
    assert "nope/train.jsonl: no such file" in result.stderr
    assert api.requests == []


def test_json_prints_the_exact_server_object(api, cli):
    job = JOB | {"some_future_field": {"x": 1}}
    api.on("GET", "/v1/fine_tuning/jobs/ftjob-abc123", (200, job))
    result = cli("fine_tuning.jobs.retrieve", "-i", "ftjob-abc123", "--json", "--base-url", api.base_url)
    assert json.loads(result.stdout) == job


def test_json_list_prints_the_list_object(api, cli):
    page = {"object": "list", "data": [FILE], "has_more": False, "first_id": "file-abc123", "last_id": "file-abc123"}
    api.on("GET", "/v1/files", (200, page))
    result = cli("files", "list", "--json", "--base-url", api.base_url)
    assert json.loads(result.stdout) == page


def test_server_error_is_one_line_with_code_and_exit_1(api, cli):
    body = error_body("Fine-tuning job ftjob-nope not found", "fine_tune_not_found", "fine_tuning_job_id")
    api.on("GET", "/v1/fine_tuning/jobs/ftjob-nope", (404, body))
    result = cli("fine_tuning.jobs.retrieve", "-i", "ftjob-nope", "--base-url", api.base_url)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: Fine-tuning job ftjob-nope not found (HTTP 404, code: fine_tune_not_found, param: fine_tuning_job_id)"
    )
    assert result.stdout == ""


def test_unknown_model_400_lists_available_models(api, cli):
    msg = "Unknown base model 'gpt-4o-mini-2024-07-18'. Available: gemma-3-270m, tiny-gemma"
    api.on("POST", "/v1/fine_tuning/jobs", (400, error_body(msg, "model_not_available", "model")))
    result = cli(
        "fine_tuning.jobs.create", "-t", "file-abc123", "-m", "gpt-4o-mini-2024-07-18", "--base-url", api.base_url
    )
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Available: gemma-3-270m, tiny-gemma" in result.stderr and "code: model_not_available" in result.stderr


def test_bad_key_401_hints_at_the_key_option(api, cli):
    api.on("GET", "/v1/files", (401, error_body("Incorrect API key provided", "invalid_api_key")))
    result = cli("files", "list", "--base-url", api.base_url, "--api-key", "sk-wrong")
    assert result.exit_code == 1
    assert "code: invalid_api_key" in result.stderr and "--api-key" in result.stderr
    assert api.requests[0].headers["authorization"] == "Bearer sk-wrong"


def test_non_json_error_body_is_still_one_line(api, cli):
    api.on("GET", "/v1/models", (502, b"<html>\n<body>Bad Gateway</body>\n</html>"))
    result = cli("models", "list", "--base-url", api.base_url)
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "HTTP 502" in result.stderr


def test_no_server_gives_a_one_line_hint(cli, free_port):
    result = cli("fine_tuning.jobs.list", "--base-url", f"http://127.0.0.1:{free_port}/v1")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "tunehouse serve" in result.stderr


def test_base_url_and_key_come_from_the_environment(api, cli):
    api.on("GET", "/v1/models", (200, {"object": "list", "data": []}))
    env = {"TUNEHOUSE_BASE_URL": api.base_url, "TUNEHOUSE_API_KEY": "sk-env"}
    assert cli("models", "list", env=env).exit_code == 0
    assert api.requests[0].headers["authorization"] == "Bearer sk-env"


def test_files_content_writes_the_exact_bytes(api, cli, tmp_path):
    payload = bytes(range(256)) * 10
    api.on("GET", "/v1/files/file-abc123/content", (200, payload))
    out = tmp_path / "copy.bin"
    result = cli("files", "content", "-i", "file-abc123", "-o", str(out), "--base-url", api.base_url)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == payload
    assert not list(tmp_path.glob(".*part"))


def test_files_content_error_leaves_no_output_file(api, cli, tmp_path):
    api.on("GET", "/v1/files/file-x/content", (404, error_body("No such File object: file-x", "not_found", "id")))
    out = tmp_path / "copy.bin"
    result = cli("files", "content", "-i", "file-x", "-o", str(out), "--base-url", api.base_url)
    assert result.exit_code == 1 and "code: not_found" in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".*part"))


def test_files_delete_and_models_delete_use_delete(api, cli):
    api.on("DELETE", "/v1/files/file-abc123", (200, {"id": "file-abc123", "object": "file", "deleted": True}))
    api.on(
        "DELETE",
        "/v1/models/ft:tiny:tunehouse:x:abcd1234",
        (200, {"id": "ft:tiny", "object": "model", "deleted": True}),
    )
    assert cli("files", "delete", "-i", "file-abc123", "--base-url", api.base_url).exit_code == 0
    result = cli("models", "delete", "-i", "ft:tiny:tunehouse:x:abcd1234", "--json", "--base-url", api.base_url)
    assert json.loads(result.stdout)["deleted"] is True
    assert api.calls("DELETE") == [
        ("DELETE", "/v1/files/file-abc123"),
        ("DELETE", "/v1/models/ft:tiny:tunehouse:x:abcd1234"),
    ]


def test_a_base_url_without_v1_gets_a_hint(api, cli):
    api.on("GET", "/files", (404, {"detail": "Not Found"}))
    result = cli("files", "list", "--base-url", api.base_url.removesuffix("/v1"))
    assert result.exit_code == 1 and f"try --base-url {api.base_url}" in result.stderr
