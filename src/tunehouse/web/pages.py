"""The dashboard's pages (GET): jobs, one job, files, one file's validation report, models, playground.

Every route takes the viewer (web.auth) and reads the store through web.views; nothing here changes state.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from tunehouse.api.deps import SessionDep, SettingsDep
from tunehouse.store import files as files_store
from tunehouse.store import models as models_store
from tunehouse.store.errors import InvalidRequest
from tunehouse.web import views
from tunehouse.web.auth import ViewerDep
from tunehouse.web.render import SECURITY_HEADERS, page

router = APIRouter(include_in_schema=False)


@router.get("/")
def jobs_list(request: Request, viewer: ViewerDep, db: SessionDep, settings: SettingsDep,
              status: str | None = None, after: str | None = None):
    if status and status not in views.STATUSES:
        raise InvalidRequest(f"Unknown job status '{status}': use one of {', '.join(views.STATUSES)}", "status")
    status = status or None  # the filter form's "all" sends an empty value
    jobs, has_more = views.jobs_page(db, settings, viewer.project, status, after)
    for job in jobs:
        job["duration"] = views.job_duration(job)
    return page(request, "jobs.html", viewer=viewer, jobs=jobs, has_more=has_more, status=status,
                statuses=views.STATUSES, after=after)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, viewer: ViewerDep, db: SessionDep, settings: SettingsDep):
    data = views.job_detail(db, settings, viewer.project, job_id)
    data["job"]["duration"] = views.job_duration(data["job"])
    return page(request, "job.html", viewer=viewer, **data)


@router.get("/jobs/{job_id}/live")
def job_live(job_id: str, viewer: ViewerDep, db: SessionDep, settings: SettingsDep,
             after_step: int = -1) -> JSONResponse:
    """What the job page polls while the job runs (new steps' metrics, newest events, status, progress)."""
    data = views.live_data(db, settings, viewer.project, job_id, after_step)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


@router.get("/files")
def files_list(request: Request, viewer: ViewerDep, db: SessionDep, after: str | None = None):
    rows, has_more = files_store.list_files(db, viewer.project, after=after, limit=views.PAGE_SIZE)
    return page(request, "files.html", viewer=viewer, files=[dict(r) for r in rows], has_more=has_more)


@router.get("/files/{file_id}")
def file_page(request: Request, file_id: str, viewer: ViewerDep, db: SessionDep, settings: SettingsDep):
    return page(request, "file.html", viewer=viewer, **views.file_report(db, settings, viewer.project, file_id))


@router.get("/files/{file_id}/content")
def file_download(file_id: str, viewer: ViewerDep, db: SessionDep, settings: SettingsDep) -> FileResponse:
    row = files_store.get_file(db, viewer.project, file_id)
    # Always an attachment, never rendered: an uploaded .html must not run on our origin.
    return FileResponse(files_store.file_blob(settings, row), media_type="application/octet-stream",
                        filename=row["filename"], headers=SECURITY_HEADERS)


@router.get("/models")
def models_list(request: Request, viewer: ViewerDep, db: SessionDep, settings: SettingsDep):
    models = models_store.list_models(db, settings, viewer.project)
    return page(request, "models.html", viewer=viewer, models=models)


@router.get("/playground")
def playground(request: Request, viewer: ViewerDep, db: SessionDep, settings: SettingsDep,
               model: str | None = None):
    models = [m["id"] for m in models_store.list_models(db, settings, viewer.project)]
    # Default pairing: the base model against the newest fine-tuned one, the comparison people come for.
    newest_ft = next((m for m in reversed(models) if m.startswith("ft:") and ":ckpt-step-" not in m), None)
    right = model if model in models else (newest_ft or (models[-1] if models else ""))
    return page(request, "playground.html", viewer=viewer, models=models, left=models[0] if models else "",
                right=right)
