"""Models a project can use: catalog base models, its fine-tuned models and their checkpoints.

`resolve_model` is what inference calls: a model id -> (base model name, adapter dir or None), or NotFound.
Never a silent fallback to some other model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tunehouse.catalog import UnknownModelError, list_base_models, resolve_base_model
from tunehouse.config import Settings
from tunehouse.store.blobs import from_ref
from tunehouse.store.db import Connection, transaction
from tunehouse.store.errors import InvalidRequest, NotFound

BASE_OWNER = "tunehouse"


def _not_found(model_id: str) -> NotFound:
    return NotFound(f"The model '{model_id}' does not exist or you do not have access to it.", param="model",
                    code="model_not_found")


def resolve_model(conn: Connection, settings: Settings, project: str, model_id: str) -> tuple[str, Path | None]:
    """Base name, alias, fine-tuned `ft:...` id or checkpoint `ft:...:ckpt-step-N` -> (base_model, adapter_dir).

    Fine-tuned and checkpoint ids resolve only inside `project`; deleted models are gone. Raises NotFound.
    """
    if model_id.startswith("ft:"):
        row = conn.execute("SELECT base_model, adapter_dir FROM models WHERE id = ? AND project = ?",
                           (model_id, project)).fetchone()
        if row is None:
            row = conn.execute("SELECT base_model, adapter_dir FROM checkpoints WHERE model_id = ? AND project = ?",
                               (model_id, project)).fetchone()
        if row is None or not from_ref(settings, row["adapter_dir"]).is_dir():
            raise _not_found(model_id)
        return row["base_model"], from_ref(settings, row["adapter_dir"])
    try:
        return resolve_base_model(settings, model_id).name, None
    except UnknownModelError:
        raise _not_found(model_id) from None


def list_models(conn: Connection, settings: Settings, project: str) -> list[dict]:
    """OpenAI Model objects: base models first, then this project's fine-tuned models and checkpoints."""
    out = [{"id": m.name, "object": "model", "created": m.created, "owned_by": BASE_OWNER}
           for m in list_base_models(settings)]
    for alias in sorted(settings.model_aliases):
        out.append({"id": alias, "object": "model", "created": out[0]["created"], "owned_by": BASE_OWNER})
    for r in conn.execute("SELECT id, created_at FROM models WHERE project = ? ORDER BY seq", (project,)):
        out.append({"id": r["id"], "object": "model", "created": r["created_at"], "owned_by": settings.org})
    for r in conn.execute("SELECT model_id, created_at FROM checkpoints WHERE project = ? ORDER BY seq", (project,)):
        out.append({"id": r["model_id"], "object": "model", "created": r["created_at"], "owned_by": settings.org})
    return out


def get_model(conn: Connection, settings: Settings, project: str, model_id: str) -> dict:
    for m in list_models(conn, settings, project):
        if m["id"] == model_id:
            return m
    raise _not_found(model_id)


def delete_model(conn: Connection, settings: Settings, project: str, model_id: str) -> Path:
    """Delete a fine-tuned model of this project and its adapter directory; returns that (now removed) path.

    Base models and checkpoints are not deletable (as on OpenAI, where only fine-tuned models are). Row first,
    files second: a crash in between leaves an orphan directory, never a model without weights.
    """
    with transaction(conn):
        row = conn.execute("SELECT adapter_dir FROM models WHERE id = ? AND project = ?",
                           (model_id, project)).fetchone()
        if row is None:
            get_model(conn, settings, project, model_id)  # raises NotFound when it is not visible at all
            raise InvalidRequest(f"Model '{model_id}' cannot be deleted: only fine-tuned models can be deleted.",
                                 param="model", code="model_not_deletable")
        conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
    path = from_ref(settings, row["adapter_dir"])
    shutil.rmtree(path, ignore_errors=True)
    return path


def resolve(settings: Settings, project: str, model_id: str) -> tuple[str, Path | None]:
    """`resolve_model` on its own short-lived connection: for callers outside a request (inference engines)."""
    from tunehouse.store.db import connect

    conn = connect(settings)
    try:
        return resolve_model(conn, settings, project, model_id)
    finally:
        conn.close()
