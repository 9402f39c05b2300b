"""SQLite connection and schema: WAL mode, one connection per thread/request, migrations by `user_version`.

Every table carries `project` (tenancy) and a `seq` INTEGER PRIMARY KEY so lists paginate in insertion order
with a stable cursor. Timestamps are unix seconds, as in OpenAI's objects.
"""

from __future__ import annotations

import secrets
import sqlite3
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tunehouse.config import Settings

_ALPHABET = string.ascii_letters + string.digits

# Each entry upgrades the schema by one version; never edit an entry once released, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE files (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        project TEXT NOT NULL,
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        status_details TEXT,
        validation TEXT  -- the data toolkit's report (JSON) for fine-tune files
    );
    CREATE INDEX files_project ON files(project, seq);

    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        project TEXT NOT NULL,
        model TEXT NOT NULL,            -- as the client asked (alias or ft: id), shown in the job object
        base_model TEXT NOT NULL,       -- resolved catalog name the engine loads
        init_adapter TEXT,              -- continue training from this adapter (model given as ft:...)
        training_file TEXT NOT NULL,
        validation_file TEXT,
        suffix TEXT,
        seed INTEGER NOT NULL,
        hyperparameters TEXT NOT NULL,  -- JSON, "auto" until the engine resolves them
        method_type TEXT NOT NULL,
        metadata TEXT,                  -- JSON object or NULL
        integrations TEXT,              -- JSON list or NULL (stored, not sent anywhere)
        status TEXT NOT NULL,
        error TEXT,                     -- JSON {code, message, param} or NULL
        model_id TEXT NOT NULL,         -- the ft:... id reserved at creation, published on success
        fine_tuned_model TEXT,
        result_files TEXT NOT NULL DEFAULT '[]',
        trained_tokens INTEGER,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        estimated_finish INTEGER,
        worker_id TEXT,
        heartbeat_at REAL
    );
    CREATE INDEX jobs_project ON jobs(project, seq);
    CREATE INDEX jobs_status ON jobs(status, seq);

    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_job ON events(job_id, seq);

    CREATE TABLE job_metrics (
        job_id TEXT NOT NULL,
        step INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (job_id, step)
    );

    CREATE TABLE checkpoints (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL,
        project TEXT NOT NULL,
        step INTEGER NOT NULL,
        model_id TEXT NOT NULL UNIQUE,
        base_model TEXT NOT NULL,
        adapter_dir TEXT NOT NULL,
        metrics TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX checkpoints_job ON checkpoints(job_id, seq);

    CREATE TABLE models (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        project TEXT NOT NULL,
        job_id TEXT NOT NULL,
        base_model TEXT NOT NULL,
        adapter_dir TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    """,
]


def new_id(prefix: str, n: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def now() -> int:
    return int(time.time())


def connect(settings: Settings) -> sqlite3.Connection:
    """A connection for one thread or one request; the schema is migrated on first use."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so writers queue on the lock instead of
    # failing mid-transaction with "database is locked" when they upgrade from a read.
    # check_same_thread=False: FastAPI may run a request's dependency and handler on different pool threads;
    # the connection is still used by one request at a time.
    conn = sqlite3.connect(settings.db_path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    _enable_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across process crashes (SIGKILL)
    migrate(conn)
    return conn


def _enable_wal(conn: sqlite3.Connection, wait_seconds: float = 30.0) -> None:
    """Switch the database to WAL, waiting out other connections doing the same.

    On a fresh database the switch needs an exclusive lock, and SQLite reports "database is locked" at once
    instead of calling the busy handler when another connection (the API and the worker starting together)
    holds it, so we retry for as long as busy_timeout would have waited.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations; returns the schema version. Safe when several processes start at once."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= len(MIGRATIONS):
        return version
    with transaction(conn):
        # Re-read under the write lock: another process may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for i in range(version, len(MIGRATIONS)):
            for statement in MIGRATIONS[i].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {i + 1}")
    return len(MIGRATIONS)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front, so read-then-write sequences are atomic."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def blob_path(settings: Settings, file_id: str) -> Path:
    return settings.blobs_dir / file_id


def list_page(
    conn: sqlite3.Connection,
    table: str,
    where: str,
    params: list,
    *,
    after: str | None,
    limit: int,
    order: str = "desc",
) -> tuple[list[sqlite3.Row], bool]:
    """One page of `table` rows matching `where`, after the row whose id is `after`; returns (rows, has_more).

    An unknown `after` id gives an empty page rather than an error, as OpenAI's cursors do.
    """
    op, direction = ("<", "DESC") if order == "desc" else (">", "ASC")
    sql = f"SELECT * FROM {table} WHERE {where}"
    args = list(params)
    if after:
        sql += f" AND seq {op} COALESCE((SELECT seq FROM {table} WHERE id = ?), {'-1' if op == '<' else '1e18'})"
        args.append(after)
    sql += f" ORDER BY seq {direction} LIMIT ?"
    args.append(limit + 1)
    rows = conn.execute(sql, args).fetchall()
    return rows[:limit], len(rows) > limit
