"""Store basics on both databases: versioned schema, transactions, pagination cursors, files on disk; SQLite's WAL."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from tunehouse.config import Settings
from tunehouse.store import db, files
from tunehouse.store.errors import NotFound


@pytest.fixture
def settings(tmp_path, database_url):
    return Settings(data_dir=tmp_path, database_url=database_url)


@pytest.fixture
def conn(settings):
    c = db.connect(settings)
    yield c
    c.close()


def test_database_is_at_latest_schema_version(conn):
    assert db.schema_version(conn) == len(db.MIGRATIONS)
    assert db.migrate(conn) == len(db.MIGRATIONS)  # nothing left to apply


def test_sqlite_database_is_wal_and_keeps_its_version_in_user_version(tmp_path):
    conn = db.connect(Settings(data_dir=tmp_path))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(db.MIGRATIONS)
    conn.close()


def open_together(settings: Settings, n: int) -> tuple[list[Exception], list[str]]:
    """`n` threads connect at the same instant; returns their errors and the journal modes they saw."""
    errors, modes = [], []
    start = threading.Barrier(n)

    def open_db():
        start.wait()
        try:
            c = db.connect(settings)
            modes.append(c.execute("PRAGMA journal_mode").fetchone()[0])
            c.close()
        except Exception as e:  # pragma: no cover - the assertion shows it
            errors.append(e)

    threads = [threading.Thread(target=open_db) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors, modes


def test_sqlite_migrations_run_once_even_when_processes_start_together(tmp_path):
    # The API and the worker open a fresh data dir at the same moment; the switch to WAL used to fail with
    # "database is locked" about one time in five, so race two connections on many fresh databases.
    for attempt in range(50):
        settings = Settings(data_dir=tmp_path / str(attempt))
        assert open_together(settings, 2) == ([], ["wal", "wal"])
        version = sqlite3.connect(settings.db_path).execute("PRAGMA user_version").fetchone()[0]
        assert version == len(db.MIGRATIONS)


def test_transaction_rolls_back_on_error(conn):
    with pytest.raises(RuntimeError), db.transaction(conn):
        conn.execute("INSERT INTO events (id, job_id, created_at, level, message, type) VALUES ('e', 'j', 0, 'info',"
                     " 'm', 'message')")
        raise RuntimeError("boom")
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def _add(conn, settings, tmp_path, name, project="p", purpose="assistants"):
    src = tmp_path / f"src-{name}"
    src.write_bytes(name.encode())
    return files.add_file(conn, settings, project=project, filename=name, purpose=purpose, src=src)


def test_list_page_cursor_both_orders_and_unknown_cursor(conn, settings, tmp_path):
    ids = [_add(conn, settings, tmp_path, f"f{i}")["id"] for i in range(5)]
    rows, more = files.list_files(conn, "p", limit=2, order="asc")
    assert [r["id"] for r in rows] == ids[:2] and more
    rows, more = files.list_files(conn, "p", limit=10, order="asc", after=ids[1])
    assert [r["id"] for r in rows] == ids[2:] and not more
    rows, _ = files.list_files(conn, "p", limit=10, order="desc", after=ids[3])
    assert [r["id"] for r in rows] == ids[:3][::-1]
    assert files.list_files(conn, "p", after="file-unknown")[0] == []


def test_file_blob_is_moved_into_the_store_and_deleted_with_the_row(conn, settings, tmp_path):
    row = _add(conn, settings, tmp_path, "a.txt")
    blob = db.blob_path(settings, row["id"])
    assert blob.read_bytes() == b"a.txt" and not (tmp_path / "src-a.txt").exists()
    files.delete_file(conn, settings, "p", row["id"])
    assert not blob.exists()
    with pytest.raises(NotFound):
        files.get_file(conn, "p", row["id"])


def test_files_are_scoped_by_project(conn, settings, tmp_path):
    row = _add(conn, settings, tmp_path, "a.txt", project="one")
    with pytest.raises(NotFound):
        files.get_file(conn, "two", row["id"])
    assert files.list_files(conn, "two")[0] == []
