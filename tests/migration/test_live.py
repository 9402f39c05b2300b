"""`tunehouse migrate` between two real tunehouse servers: a source with trained jobs (OpenAI's stand-in) and a
target that retrains them. Jobs are tiny-model jobs of 10-12 identity chats, one epoch, so each takes seconds.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import TINY
from tests.migration.live import OPENAI_BASE, REFUSAL, DownloadGate, client, gated_server, make_settings, upload, wait
from tests.tiny import FIXTURES
from tunehouse.cli.local_server import local_server

METADATA = {"team": "support", "ticket": "T-42"}
MAP = f"{OPENAI_BASE}={TINY}"


@dataclass
class Source:
    url: str
    gate: DownloadGate
    with_valid: dict  # succeeded job with a validation file
    no_valid: dict  # succeeded job without one
    dpo: dict  # succeeded DPO job (preference pairs, with held-out pairs)
    files: Path  # the uploaded files, by the names the source knows them


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("migrate-source")
    lines = (FIXTURES / "identity_chat.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    files = root / "files"
    files.mkdir()
    pairs = (FIXTURES / "identity_pairs_train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    for name, part in (("support_train.jsonl", lines[:12]), ("support_valid.jsonl", lines[12:18]),
                       ("faq_train.jsonl", lines[20:36]), ("prefs_train.jsonl", pairs[:12]),
                       ("prefs_valid.jsonl", pairs[40:44])):
        (files / name).write_text("".join(part), encoding="utf-8")
    settings = make_settings(root / "data", tiny_model_dir, names=(OPENAI_BASE,))
    with gated_server(settings) as (url, gate):
        c = client(url)
        train, valid, faq = (upload(c, files / n) for n in ("support_train.jsonl", "support_valid.jsonl",
                                                             "faq_train.jsonl"))
        # learning_rate_multiplier stays "auto": the source must report what it resolved it to.
        hp = {"n_epochs": 1, "batch_size": 4}
        a = c.fine_tuning.jobs.create(model=OPENAI_BASE, training_file=train, validation_file=valid, suffix="support",
                                      seed=1234, metadata=METADATA,
                                      method={"type": "supervised", "supervised": {"hyperparameters": hp}})
        b = c.fine_tuning.jobs.create(model=OPENAI_BASE, training_file=faq, suffix="faq", seed=7,
                                      hyperparameters=hp)
        prefs, prefs_valid = (upload(c, files / n) for n in ("prefs_train.jsonl", "prefs_valid.jsonl"))
        d = c.fine_tuning.jobs.create(model=OPENAI_BASE, training_file=prefs, validation_file=prefs_valid,
                                      suffix="prefs", seed=99,
                                      method={"type": "dpo", "dpo": {"hyperparameters": {**hp, "beta": 0.2}}})
        yield Source(url, gate, wait(c, a.id), wait(c, b.id), wait(c, d.id), files)


@pytest.fixture
def target(tmp_path, tiny_model_dir):
    with local_server(make_settings(tmp_path / "target", tiny_model_dir), worker=True) as url:
        yield url


@pytest.fixture
def cli(monkeypatch, tmp_path):
    from tunehouse.cli import app

    for key in list(os.environ):
        if key.startswith("TUNEHOUSE_") or key.startswith("OPENAI_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TUNEHOUSE_DATA_DIR", str(tmp_path / "cli-data"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)  # the default --out (./tunehouse-migrate/TIME) lands here, not in the repo
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), catch_exceptions=False)


def _content(url: str, file_id: str) -> bytes:
    return client(url).files.content(file_id).read()


def test_migrate_carries_files_settings_and_metadata_and_measures_parity(cli, source, target, tmp_path):
    src = source.with_valid
    assert src["hyperparameters"]["learning_rate_multiplier"] != "auto"  # the source resolved it
    out = tmp_path / "report"
    result = cli("migrate", "--job", src["id"], "--from-base-url", source.url, "--from-api-key", "x",
                 "--base-url", target, "--model-map", MAP, "--max-eval-examples", "3", "--poll-seconds", "0.2",
                 "--out", str(out), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    (m,) = json.loads(result.stdout)["migrations"]
    assert set(m) == {"source_job", "source_model", "job", "fine_tuned_model", "status", "evaluation", "skipped"}
    assert m["source_job"] == src["id"] and m["source_model"] == src["fine_tuned_model"]
    assert m["status"] == "succeeded" and m["skipped"] is None
    assert m["fine_tuned_model"].startswith(f"ft:{TINY}:tunehouse:support:")

    job = client(target).fine_tuning.jobs.retrieve(m["job"]).model_dump()
    assert job["fine_tuned_model"] == m["fine_tuned_model"] and job["model"] == TINY
    assert _content(target, job["training_file"]) == _content(source.url, src["training_file"])
    assert _content(target, job["validation_file"]) == _content(source.url, src["validation_file"])
    assert client(target).files.retrieve(job["training_file"]).filename == "support_train.jsonl"
    assert job["hyperparameters"] == src["hyperparameters"] and job["seed"] == 1234
    assert job["metadata"] == {**METADATA, "migrated_from": src["id"], "migrated_model": src["fine_tuned_model"]}

    evaluation = m["evaluation"]
    assert evaluation["n"] == 3 and set(evaluation) == {"model", "baseline", "n"}
    assert evaluation["model"]["exact_match"] is not None and evaluation["baseline"]["exact_match"] is not None
    report = json.loads((out / "report.json").read_text())["migrations"][0]
    assert any(line.startswith("exact match: local ") and " vs old " in line for line in report["parity"])
    md = (out / "report.md").read_text()
    assert src["id"] in md and "exact match: local" in md and (out / src["id"] / "parity" / "report.md").is_file()


def test_holdout_is_left_out_of_training_on_the_in_process_target(cli, source, tmp_path, tiny_model_dir,
                                                                  monkeypatch):
    src = source.no_valid
    settings = make_settings(tmp_path / "local", tiny_model_dir)
    monkeypatch.setenv("TUNEHOUSE_WORKER_POLL_SECONDS", "0.2")
    monkeypatch.setenv("TUNEHOUSE_JOB_EVAL_EXAMPLES", "0")
    result = cli("migrate", "--suffix", "faq", "--from-base-url", source.url, "--from-api-key", "x", "--data-dir",
                 str(settings.data_dir), "--model", TINY, "--holdout-fraction", "0.25", "--poll-seconds", "0.2",
                 "--out", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    (m,) = json.loads(result.stdout)["migrations"]
    assert m["source_job"] == src["id"] and m["status"] == "succeeded" and m["evaluation"]["n"] == 4
    with local_server(settings) as url:  # the in-process target kept everything in its data dir
        job = client(url).fine_tuning.jobs.retrieve(m["job"]).model_dump()
        trained = _content(url, job["training_file"]).decode().splitlines()
    original = _content(source.url, src["training_file"]).decode().splitlines()
    assert job["validation_file"] is None and job["metadata"]["migration_holdout"] == "4 examples"
    held = [line for line in original if line not in trained]
    assert len(held) == 4 and len(trained) == 12 and all(line in original for line in trained)
    report = json.loads((tmp_path / "out" / "report.json").read_text())["migrations"][0]
    assert any("4 of 16 training examples are held out" in n for n in report["notes"])
    assert report["parity"][0] == "on 4 examples of 4 held-out training examples"


def test_dry_run_shows_estimate_and_openai_price_and_creates_nothing(cli, source, target, tmp_path):
    result = cli("migrate", "--all", "--dry-run", "--from-base-url", source.url, "--from-api-key", "x",
                 "--base-url", target, "--model-map", MAP, "--out", str(tmp_path / "dry"))
    assert result.exit_code == 0, result.stdout + result.stderr
    for job in (source.with_valid, source.no_valid):
        assert job["id"] in result.stdout
    assert "would migrate" in result.stdout and f"({OPENAI_BASE})" in result.stdout and "$" in result.stdout
    report = json.loads((tmp_path / "dry" / "report.json").read_text())
    plans = {m["source_job"]: m["plan"] for m in report["migrations"]}
    plan = plans[source.with_valid["id"]]
    assert plan["examples"] == 12 and plan["n_epochs"] == 1 and plan["trained_tokens_estimate"] > 0
    assert plan["local_training_seconds"] > 0 and plan["openai_cost_usd"] > 0
    assert plan["openai_cost_usd"] == plan["openai_cost_usd_all"][OPENAI_BASE]
    assert [f["origin"] for f in plan["files"]] == ["downloaded", "downloaded"]
    assert all(m["status"] == "dry-run" for m in report["migrations"])
    c = client(target)
    assert c.files.list().data == [] and c.fine_tuning.jobs.list().data == []


def test_refused_download_matches_files_dir_copies(cli, source, tmp_path):
    src = source.with_valid
    source.gate.refuse = True
    try:
        assert _refused(source.url, src["training_file"])
        result = cli("migrate", "--job", src["id"], "--dry-run", "--from-base-url", source.url, "--from-api-key",
                     "x", "--model-map", MAP, "--files-dir", str(source.files), "--out", str(tmp_path / "r"))
    finally:
        source.gate.refuse = False
    assert result.exit_code == 0, result.stdout + result.stderr
    plan = json.loads((tmp_path / "r" / "report.json").read_text())["migrations"][0]["plan"]
    assert [f["origin"] for f in plan["files"]] == [str(source.files / "support_train.jsonl"),
                                                    str(source.files / "support_valid.jsonl")]


def test_refused_download_without_copies_names_the_missing_files(cli, source, tmp_path, target):
    src = source.with_valid
    files = tmp_path / "partial"
    files.mkdir()
    (files / "support_valid.jsonl").write_text("{}\n")  # right name, wrong size: not a match
    source.gate.refuse = True
    try:
        result = cli("migrate", "--job", src["id"], "--from-base-url", source.url, "--from-api-key", "x",
                     "--base-url", target, "--model-map", MAP, "--files-dir", str(files), "--json")
    finally:
        source.gate.refuse = False
    assert result.exit_code == 1
    (m,) = json.loads(result.stdout)["migrations"]
    assert m["status"] == "skipped" and m["job"] is None and m["evaluation"] is None
    train = client(source.url).files.retrieve(src["training_file"])
    valid = client(source.url).files.retrieve(src["validation_file"])
    why = m["skipped"]
    assert why.startswith("missing file(s): ") and REFUSAL in why
    assert f"{train.id} (support_train.jsonl, {train.bytes} bytes)" in why
    assert f"{valid.id} (support_valid.jsonl, {valid.bytes} bytes)" in why and "has 3 bytes" in why
    assert client(target).files.list().data == []


def test_a_dpo_job_migrates_with_its_method_and_beta_and_parity_on_held_out_pairs(cli, source, target, tmp_path):
    src = source.dpo
    assert src["status"] == "succeeded" and src["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    result = cli("migrate", "--job", src["id"], "--from-base-url", source.url, "--from-api-key", "x",
                 "--base-url", target, "--model-map", MAP, "--max-eval-examples", "3", "--poll-seconds", "0.2",
                 "--out", str(tmp_path / "report"), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    (m,) = json.loads(result.stdout)["migrations"]
    assert m["status"] == "succeeded" and m["skipped"] is None
    job = client(target).fine_tuning.jobs.retrieve(m["job"]).model_dump()
    assert job["method"] == src["method"] and job["method"]["type"] == "dpo"  # resolved values, beta included
    assert _content(target, job["training_file"]) == _content(source.url, src["training_file"])
    assert job["seed"] == 99 and job["metadata"]["migrated_from"] == src["id"]
    evaluation = m["evaluation"]
    assert evaluation["n"] == 3
    assert evaluation["model"]["preference_accuracy"] is not None
    assert evaluation["baseline"]["preference_accuracy"] is not None


def test_unmapped_source_model_is_skipped_with_reason(cli, source, target, tmp_path):
    result = cli("migrate", "--job", source.with_valid["id"], "--job", "ftjob-nope", "--from-base-url", source.url,
                 "--from-api-key", "x", "--base-url", target, "--model-map", "gpt-4.1-2025-04-14=tiny-gemma",
                 "--json")
    assert result.exit_code == 1
    skipped = {m["source_job"]: m["skipped"] for m in json.loads(result.stdout)["migrations"]}
    assert f"source model {OPENAI_BASE} matches no --model-map entry" in skipped[source.with_valid["id"]]
    assert "the source has no such job" in skipped["ftjob-nope"] and "HTTP 404" in skipped["ftjob-nope"]
    (report,) = (tmp_path / "tunehouse-migrate").glob("*/report.md")  # the default --out
    assert "0 of 2 job(s) were migrated" in report.read_text()


def test_bad_source_key_is_one_line(cli, tmp_path, tiny_model_dir):
    settings = make_settings(tmp_path / "keyed", tiny_model_dir, api_keys="default:th-right-key")
    with local_server(settings) as url:
        result = cli("migrate", "--all", "--from-base-url", url, "--from-api-key", "th-wrong", "--model", TINY)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"the source at {url} rejected the API key" in lines[0] and "HTTP 401" in lines[0]


def test_unreachable_source_is_one_line(cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    result = cli("migrate", "--all", "--from-base-url", url, "--from-api-key", "x", "--model", TINY)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: cannot reach the source at {url} (check --from-base-url and the network)"


def _refused(url: str, file_id: str) -> bool:
    import openai

    try:
        client(url).files.content(file_id)
    except openai.BadRequestError as e:
        return REFUSAL in str(e)
    return False


def test_distill_prompts_add_the_old_models_answers_to_the_training_file(cli, source, target, tmp_path):
    src = source.with_valid
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Who are you?\nWhat can you do?\nWho made you?\n", encoding="utf-8")
    dry = cli("migrate", "--job", src["id"], "--from-base-url", source.url, "--from-api-key", "x", "--base-url",
              target, "--model-map", MAP, "--distill-prompts", str(prompts), "--dry-run", "--out", str(tmp_path / "d"))
    assert dry.exit_code == 0 and "would ask the old model 3 prompts" in " ".join(dry.stdout.split())
    out = tmp_path / "report"
    result = cli("migrate", "--job", src["id"], "--from-base-url", source.url, "--from-api-key", "x",
                 "--base-url", target, "--model-map", MAP, "--no-evaluate", "--poll-seconds", "0.2",
                 "--distill-prompts", str(prompts), "--out", str(out), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    (m,) = json.loads(result.stdout)["migrations"]
    job = client(target).fine_tuning.jobs.retrieve(m["job"]).model_dump()
    original = _content(source.url, src["training_file"])
    uploaded = _content(target, job["training_file"])
    teacher = [json.loads(line) for line in uploaded[len(original):].splitlines()]
    assert uploaded.startswith(original) and len(teacher) == 3
    assert [c["messages"][0]["content"] for c in teacher] == prompts.read_text().splitlines()
    assert all(c["messages"][-1]["role"] == "assistant" for c in teacher)
    assert job["metadata"]["migration_distilled"] == "3 teacher chats" and m["status"] == "succeeded"
