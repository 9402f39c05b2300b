"""/v1/fine_tuning/jobs: create, list (metadata filters), retrieve, cancel/pause/resume, events, checkpoints."""

from __future__ import annotations

import json
import re
import secrets
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request

from tunehouse.api.deps import ProjectDep, SessionDep, SettingsDep
from tunehouse.api.errors import APIError
from tunehouse.api.schemas import CreateFineTuningJob, DPOHyperparameters, Hyperparameters
from tunehouse.catalog import UnknownModelError, resolve_base_model
from tunehouse.config import Settings
from tunehouse.store import files as files_store
from tunehouse.store import jobs as store
from tunehouse.store.blobs import to_ref
from tunehouse.store.checkpoints import list_checkpoints as list_checkpoint_rows
from tunehouse.store.db import connect
from tunehouse.store.errors import NotFound
from tunehouse.store.job_validation import validate_job_files
from tunehouse.store.models import resolve_model

router = APIRouter(tags=["fine-tuning"])
_METADATA_QUERY = re.compile(r"metadata\[(.+)\]")
SUPERVISED_KEYS = ("batch_size", "learning_rate_multiplier", "n_epochs")


def job_object(row, settings: Settings) -> dict:
    hp = json.loads(row["hyperparameters"])
    return {
        "object": "fine_tuning.job",
        "id": row["id"],
        "model": row["model"],
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
        "fine_tuned_model": row["fine_tuned_model"],
        "organization_id": settings.org,
        "result_files": json.loads(row["result_files"]),
        "status": row["status"],
        "validation_file": row["validation_file"],
        "training_file": row["training_file"],
        # OpenAI's top-level hyperparameters are the supervised three; the method carries all (DPO adds beta).
        "hyperparameters": {k: v for k, v in hp.items() if k in SUPERVISED_KEYS},
        "trained_tokens": row["trained_tokens"],
        "error": json.loads(row["error"]) if row["error"] else None,
        "integrations": json.loads(row["integrations"]) if row["integrations"] else None,
        "seed": row["seed"],
        "estimated_finish": row["estimated_finish"],
        "method": {"type": row["method_type"], row["method_type"]: {"hyperparameters": hp}},
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
    }


def event_object(row) -> dict:
    return {"object": "fine_tuning.job.event", "id": row["id"], "created_at": row["created_at"],
            "level": row["level"], "message": row["message"], "type": row["type"], "data": json.loads(row["data"])}


def checkpoint_object(row) -> dict:
    metrics = {k: v for k, v in json.loads(row["metrics"]).items() if isinstance(v, int | float)}
    return {"object": "fine_tuning.job.checkpoint", "id": row["id"], "created_at": row["created_at"],
            "fine_tuned_model_checkpoint": row["model_id"], "fine_tuning_job_id": row["job_id"],
            "metrics": metrics, "step_number": row["step"]}


def _hyperparameters(body: CreateFineTuningJob) -> dict:
    """The job's hyperparameters ("auto" where not given) from its method, or the deprecated top level."""
    method = body.method.type if body.method else "supervised"
    if method == "reinforcement":
        raise APIError(400, "Fine-tuning method 'reinforcement' is not supported; tunehouse implements 'supervised'"
                       " and 'dpo' fine-tuning.", param="method.type", code="unsupported_method")
    if method == "dpo":
        method_hp = body.method.dpo.hyperparameters if body.method.dpo else None
    else:
        method_hp = body.method.supervised.hyperparameters if body.method and body.method.supervised else None
    if body.hyperparameters and body.hyperparameters.given() and method_hp and method_hp.given():
        raise APIError(400, f"Pass hyperparameters either in 'method.{method}.hyperparameters' or in the deprecated"
                       " top-level 'hyperparameters', not both.", param="hyperparameters", code="invalid_value")
    chosen = method_hp if method_hp and method_hp.given() else body.hyperparameters
    if method == "dpo":
        return DPOHyperparameters(**(chosen.model_dump() if chosen else {})).resolved()
    return (chosen or Hyperparameters()).resolved()


def _check_file(db, project: str, file_id: str, param: str) -> None:
    try:
        row = files_store.get_file(db, project, file_id)
    except NotFound:
        raise APIError(400, f"invalid {param}: no file with id '{file_id}' exists in this project.", param=param,
                       code="file_not_found") from None
    if row["purpose"] != "fine-tune":
        raise APIError(400, f"File {file_id} has purpose '{row['purpose']}'; {param} must be a file uploaded with"
                       " purpose 'fine-tune'.", param=param, code="invalid_file_purpose")


def _resolve_base(db, settings: Settings, project: str, model: str) -> tuple[str, str | None]:
    if model.startswith("ft:"):  # continue training a fine-tuned model (or checkpoint) of this project
        try:
            base, adapter = resolve_model(db, settings, project, model)
        except NotFound as e:
            raise APIError(400, e.message, param="model", code="model_not_available") from None
        return base, to_ref(settings, adapter)  # recorded as a blob ref, as the store records adapters
    try:
        return resolve_base_model(settings, model).name, None
    except UnknownModelError as e:
        raise APIError(400, f"Model '{model}' is not available for fine-tuning. Available: "
                       f"{', '.join(e.available)}.", param="model", code="model_not_available") from None


def _validate_in_background(settings: Settings, job_id: str) -> None:
    conn = connect(settings)
    try:
        validate_job_files(conn, settings, job_id)
    finally:
        conn.close()


@router.post("/fine_tuning/jobs")
def create_job(body: CreateFineTuningJob, background: BackgroundTasks, db: SessionDep, settings: SettingsDep,
               project: ProjectDep) -> dict:
    hyperparameters = _hyperparameters(body)
    base, adapter = _resolve_base(db, settings, project, body.model)
    _check_file(db, project, body.training_file, "training_file")
    if body.validation_file:
        _check_file(db, project, body.validation_file, "validation_file")
    spec = {
        "model": body.model if body.model.startswith("ft:") else base,
        "base_model": base,
        "init_adapter": adapter,
        "training_file": body.training_file,
        "validation_file": body.validation_file,
        "suffix": body.suffix,
        "seed": body.seed if body.seed is not None else secrets.randbelow(2**31),
        "hyperparameters": hyperparameters,
        "method_type": body.method.type if body.method else "supervised",
        "metadata": body.metadata,
        "integrations": [i.model_dump(exclude_none=True) for i in body.integrations] if body.integrations else None,
    }
    row = store.create_job(db, settings, project, spec)
    background.add_task(_validate_in_background, settings, row["id"])
    return job_object(row, settings)


@router.get("/fine_tuning/jobs")
def list_jobs(request: Request, db: SessionDep, settings: SettingsDep, project: ProjectDep, after: str | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict:
    metadata = {}
    for key, value in request.query_params.multi_items():
        m = _METADATA_QUERY.fullmatch(key)
        if m:
            metadata[m.group(1)] = value
    rows, has_more = store.list_jobs(db, project, after=after, limit=limit, metadata=metadata)
    return {"object": "list", "data": [job_object(r, settings) for r in rows], "has_more": has_more}


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, db: SessionDep, settings: SettingsDep, project: ProjectDep) -> dict:
    return job_object(store.get_job(db, project, job_id), settings)


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, db: SessionDep, settings: SettingsDep, project: ProjectDep) -> dict:
    return job_object(store.cancel_job(db, project, job_id), settings)


@router.post("/fine_tuning/jobs/{job_id}/pause")
def pause_job(job_id: str, db: SessionDep, settings: SettingsDep, project: ProjectDep) -> dict:
    return job_object(store.pause_job(db, project, job_id), settings)


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume_job(job_id: str, db: SessionDep, settings: SettingsDep, project: ProjectDep) -> dict:
    return job_object(store.resume_job(db, project, job_id), settings)


@router.get("/fine_tuning/jobs/{job_id}/events")
def list_events(job_id: str, db: SessionDep, project: ProjectDep, after: str | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict:
    store.get_job(db, project, job_id)
    rows, has_more = store.list_events(db, job_id, after=after, limit=limit)
    return {"object": "list", "data": [event_object(r) for r in rows], "has_more": has_more}


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(job_id: str, db: SessionDep, project: ProjectDep, after: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 10) -> dict:
    store.get_job(db, project, job_id)
    rows, has_more = list_checkpoint_rows(db, job_id, after=after, limit=limit)
    data = [checkpoint_object(r) for r in rows]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}
