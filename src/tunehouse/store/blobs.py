"""Blobs: uploaded files, job directories (adapters, checkpoints, resumable state) and results, under
settings.blob_root (TUNEHOUSE_BLOB_DIR, default the data dir) — a shared filesystem when several machines serve
or train from one database.

The interface is kept this small so another backend (an S3-compatible store) can follow: where a file object's
bytes live, where a job writes, and how a path is recorded in the database. Paths are recorded relative to the
blob root, so machines may mount the same share at different places; absolute paths written by older versions
still resolve (joining an absolute path keeps it).
"""

from __future__ import annotations

from pathlib import Path

from tunehouse.config import Settings


def file_path(settings: Settings, file_id: str) -> Path:
    """Where a file object's bytes live (written once: a temporary name in the same folder, then a rename)."""
    return settings.blobs_dir / file_id


def job_dir(settings: Settings, job_id: str) -> Path:
    """A job's working directory: resolved config, resumable state, checkpoints and the final adapter."""
    return settings.jobs_dir / job_id


def to_ref(settings: Settings, path: Path | str) -> str:
    """How the database records a blob path: relative to the blob root when inside it, else as given."""
    path = Path(path)
    try:
        return path.resolve().relative_to(settings.blob_root.resolve()).as_posix()
    except ValueError:
        return str(path)


def from_ref(settings: Settings, ref: str) -> Path:
    """The local path of a recorded blob path (see to_ref)."""
    return settings.blob_root / ref
