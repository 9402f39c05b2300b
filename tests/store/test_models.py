"""Model resolution for inference and the models list: base, fine-tuned, checkpoints, per project."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import TINY
from tunehouse.store import blobs, checkpoints, db, jobs, leases
from tunehouse.store.errors import InvalidRequest, NotFound
from tunehouse.store.models import delete_model, list_models, resolve_model


@pytest.fixture
def done(settings, tmp_path):
    """A succeeded job row with an adapter dir and one checkpoint (rows only; training is tested elsewhere)."""
    conn = db.connect(settings)
    spec = {"model": TINY, "base_model": TINY, "training_file": "file-x", "seed": 1, "suffix": "s",
            "hyperparameters": {"n_epochs": 1}, "metadata": None}
    job = jobs.create_job(conn, settings, "p", spec)
    conn.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", (job["id"],))
    leases.claim_job(conn, "w:1:a")
    adapter, ckpt = blobs.job_dir(settings, job["id"]) / "adapter", tmp_path / "ckpt"  # in / outside the blob dir
    adapter.mkdir(parents=True)
    ckpt.mkdir()
    checkpoints.add_checkpoint(conn, job, 3, blobs.to_ref(settings, ckpt), {"step": 3}, keep=3)
    jobs.complete_job(conn, job, "w:1:a", adapter_ref=blobs.to_ref(settings, adapter), trained_tokens=1,
                      hyperparameters={},
                      result_file_ids=["file-r"])
    yield conn, job, adapter, ckpt
    conn.close()


def test_resolve_base_fine_tuned_and_checkpoint(settings, done):
    conn, job, adapter, ckpt = done
    assert resolve_model(conn, settings, "p", TINY) == (TINY, None)
    assert resolve_model(conn, settings, "p", job["model_id"]) == (TINY, adapter)
    assert resolve_model(conn, settings, "p", f"{job['model_id']}:ckpt-step-3") == (TINY, ckpt)


def test_adapters_are_recorded_relative_to_the_blob_dir_so_it_may_be_mounted_elsewhere(settings, done, tmp_path):
    conn, job, adapter, _ = done
    stored = conn.execute("SELECT adapter_dir FROM models WHERE id = ?", (job["model_id"],)).fetchone()[0]
    assert stored == f"jobs/{job['id']}/adapter"
    moved = tmp_path / "mounted-elsewhere"
    shutil.copytree(settings.jobs_dir, moved / "jobs")  # the same share, seen by another machine at another path
    elsewhere = settings.model_copy(update={"blob_dir": moved})
    assert resolve_model(conn, elsewhere, "p", job["model_id"]) == (TINY, moved / stored)


def test_resolve_unknown_or_foreign_model_is_not_found(settings, done):
    conn, job, *_ = done
    for project, model in (("other", job["model_id"]), ("p", "no-such-base"), ("p", "ft:x:y:z:12345678")):
        with pytest.raises(NotFound):
            resolve_model(conn, settings, project, model)


def test_alias_resolves_to_its_base(settings, done):
    conn, *_ = done
    settings.model_aliases = {"gpt-4o-mini": TINY}
    assert resolve_model(conn, settings, "p", "gpt-4o-mini") == (TINY, None)


def test_list_has_base_finetuned_and_checkpoints(settings, done):
    conn, job, *_ = done
    ids = [m["id"] for m in list_models(conn, settings, "p")]
    assert TINY in ids and job["model_id"] in ids and f"{job['model_id']}:ckpt-step-3" in ids
    assert job["model_id"] not in [m["id"] for m in list_models(conn, settings, "other")]


def test_only_fine_tuned_models_are_deletable(settings, done):
    conn, job, adapter, _ = done
    with pytest.raises(InvalidRequest):
        delete_model(conn, settings, "p", TINY)
    with pytest.raises(InvalidRequest):
        delete_model(conn, settings, "p", f"{job['model_id']}:ckpt-step-3")
    assert delete_model(conn, settings, "p", job["model_id"]) == adapter and not adapter.exists()
    with pytest.raises(NotFound):
        resolve_model(conn, settings, "p", job["model_id"])
