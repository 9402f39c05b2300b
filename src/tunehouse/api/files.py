"""/v1/files: upload (streamed to disk), list, retrieve, delete, content (exact bytes back)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path, PureWindowsPath
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from tunehouse.api.deps import ProjectDep, SessionDep, SettingsDep
from tunehouse.api.errors import APIError
from tunehouse.config import Settings
from tunehouse.store import files as store
from tunehouse.store.db import connect

router = APIRouter(tags=["files"])
MAX_FIELD_BYTES = 4096  # non-file form fields (purpose) are tiny; cap them so they cannot eat memory


def file_object(row) -> dict:
    obj = {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": row["status"],
    }
    if row["status_details"] is not None:
        obj["status_details"] = row["status_details"]
    return obj


def client_basename(name: str) -> str:
    """Keep only the last path component (the legacy CLI sends full paths, Windows clients backslashes)."""
    base = PureWindowsPath(name.replace("\x00", "")).name.strip()
    return base if base not in ("", ".", "..") else "upload"


class _MultipartUpload:
    """Streams the `file` part straight into a temp blob and keeps the small fields in memory."""

    def __init__(self, settings: Settings, boundary: bytes):
        self.max_bytes = settings.max_upload_bytes
        settings.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = settings.blobs_dir / f".upload-{secrets.token_hex(8)}"
        self.fields: dict[str, bytes] = {}
        self.filename: str | None = None
        self.size = 0
        self.too_big = False
        self.complete = False  # set by the closing boundary; python-multipart's finalize() does not check it
        self._out = None
        self._name = self._header_field = b""
        self._headers: dict[bytes, bytes] = {}
        self._is_file = False
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: setattr(self, "_header_field", self._header_field + d[s:e]),
            "on_header_value": self._header_value,
            "on_header_end": lambda: setattr(self, "_header_field", b""),
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": lambda: setattr(self, "complete", True),
        }
        self.parser = MultipartParser(boundary, callbacks)

    def _part_begin(self):
        self._headers, self._header_field, self._is_file = {}, b"", False

    def _header_value(self, data, start, end):
        key = self._header_field.lower()
        self._headers[key] = self._headers.get(key, b"") + data[start:end]

    def _headers_finished(self):
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = opts.get(b"name", b"")
        if not self._name:  # RFC 7578: every form-data part names its field; a nameless one is a broken client
            raise MultipartParseError("a part has no Content-Disposition header with a name")
        if self._name == b"file" and b"filename" in opts and self._out is None:
            self._is_file = True
            self.filename = opts[b"filename"].decode("utf-8", "replace")
            self._out = open(self.tmp, "wb")  # noqa: SIM115 — closed in _part_end / cleanup
        else:
            self.fields[self._name.decode("utf-8", "replace")] = b""

    def _part_data(self, data, start, end):
        if self._is_file:
            self.size += end - start
            if self.size > self.max_bytes:
                self.too_big = True
                return
            self._out.write(data[start:end])
        else:
            key = self._name.decode("utf-8", "replace")
            if len(self.fields[key]) < MAX_FIELD_BYTES:
                self.fields[key] += data[start:end]

    def _part_end(self):
        if self._is_file and self._out is not None:
            self._out.flush()
            os.fsync(self._out.fileno())  # the row we insert next must never point at bytes still in a cache
            self._out.close()

    def feed(self, chunk: bytes) -> None:
        """Parse one chunk of the body; a malformed body is the client's error (400), never a 500."""
        try:
            self.parser.write(chunk)
        except MultipartParseError as e:
            raise APIError(400, f"Could not parse the multipart/form-data body: {e}.", param="file",
                           code="invalid_multipart") from e

    def finish(self) -> None:
        self.parser.finalize()
        if not self.complete:
            raise APIError(400, "The multipart/form-data body ended before its closing boundary.", param="file",
                           code="invalid_multipart")

    def cleanup(self):
        if self._out is not None and not self._out.closed:
            self._out.close()
        self.tmp.unlink(missing_ok=True)


def _too_large(settings: Settings) -> APIError:
    return APIError(413, f"File is too large: the maximum upload size is {settings.max_upload_bytes} bytes"
                    f" ({settings.max_upload_bytes / 2**20:.1f} MiB; TUNEHOUSE_MAX_UPLOAD_BYTES).", param="file",
                    code="file_too_large", headers={"Connection": "close"})


@router.post("/files")
async def create_file(request: Request, settings: SettingsDep, project: ProjectDep) -> dict:
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise APIError(400, "Uploads must be multipart/form-data with a 'file' part and a 'purpose' field.",
                       param="file", code="invalid_content_type")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes + 1024 * 1024:
        raise _too_large(settings)  # refuse before reading a byte
    upload = _MultipartUpload(settings, params[b"boundary"])
    try:
        async for chunk in request.stream():
            upload.feed(chunk)
            if upload.too_big:
                raise _too_large(settings)
        upload.finish()
        if upload.filename is None:
            raise APIError(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        purpose = store.check_purpose(upload.fields.get("purpose", b"").decode("utf-8", "replace").strip())
        row = await run_in_threadpool(_adopt, settings, project, client_basename(upload.filename), purpose, upload.tmp)
    finally:
        upload.cleanup()
    return file_object(row)


def _adopt(settings: Settings, project: str, filename: str, purpose: str, tmp: Path):
    conn = connect(settings)
    try:
        return store.add_file(conn, settings, project=project, filename=filename, purpose=purpose, src=tmp)
    finally:
        conn.close()


@router.get("/files")
def list_files(
    db: SessionDep,
    project: ProjectDep,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict:
    rows, has_more = store.list_files(db, project, purpose=purpose, after=after, limit=limit, order=order)
    data = [file_object(r) for r in rows]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


@router.get("/files/{file_id}")
def retrieve_file(file_id: str, db: SessionDep, project: ProjectDep) -> dict:
    return file_object(store.get_file(db, project, file_id))


@router.delete("/files/{file_id}")
def delete_file(file_id: str, db: SessionDep, settings: SettingsDep, project: ProjectDep) -> dict:
    store.delete_file(db, settings, project, file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/files/{file_id}/content")
def file_content(file_id: str, db: SessionDep, settings: SettingsDep, project: ProjectDep) -> FileResponse:
    row = store.get_file(db, project, file_id)
    return FileResponse(store.file_blob(settings, row), media_type="application/octet-stream")
