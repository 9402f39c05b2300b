"""/v1/models: base models from the catalog, this project's fine-tuned models and checkpoints; delete ft models.

Model ids contain colons (ft:base:org:suffix:id), so the routes take `{model_id:path}` unescaped.
"""

from __future__ import annotations

from fastapi import APIRouter

from tunehouse.api.deps import ProjectDep, SessionDep, SettingsDep
from tunehouse.store import models as store

router = APIRouter(tags=["models"])


@router.get("/models")
def list_models(db: SessionDep, settings: SettingsDep, project: ProjectDep) -> dict:
    return {"object": "list", "data": store.list_models(db, settings, project)}


@router.get("/models/{model_id:path}")
def retrieve_model(model_id: str, db: SessionDep, settings: SettingsDep, project: ProjectDep) -> dict:
    return store.get_model(db, settings, project, model_id)


@router.delete("/models/{model_id:path}")
def delete_model(model_id: str, db: SessionDep, settings: SettingsDep, project: ProjectDep) -> dict:
    store.delete_model(db, settings, project, model_id)
    return {"id": model_id, "object": "model", "deleted": True}
