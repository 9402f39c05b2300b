"""The store's database: SQLite (the default, one file in the data dir) or PostgreSQL (several servers and
workers on one database), behind one small connection API, plus the versioned schema both share.

Driver choice: sqlite3 for SQLite, psycopg 3 with one `psycopg_pool.ConnectionPool` per process and URL for
PostgreSQL. The store's SQL is small, hand-written and parametrized; a thin dialect layer (this module: `?`
placeholders, rows like sqlite3.Row, `transaction()`, DDL types) keeps queries such as the single-statement job
claim readable, where SQLAlchemy Core would rewrite every query for no gain. The few statements that differ
between the dialects branch on `conn.dialect` in the store module that owns them; no SQL lives outside store/.

Every table carries `project` (tenancy) and a `seq` integer primary key so lists paginate in insertion order
with a stable cursor. Timestamps are unix seconds, as in OpenAI's objects.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import no_result
from psycopg_pool import ConnectionPool

from tunehouse.config import Settings

log = logging.getLogger("tunehouse.store")
_ALPHABET = string.ascii_letters + string.digits

# Each entry upgrades the schema by one version; never edit an entry once released, append a new one.
# Written once in SQLite's types; translate_ddl gives PostgreSQL's (both dialects run the same list).
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
    # 2: what API servers shared through the data dir or their memory moves into the database, so several
    # servers on several machines answer alike: API keys (hashed) and dashboard sign-in sessions.
    """
    CREATE TABLE api_keys (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,          -- the first characters, shown by `keys list`
        sha256 TEXT NOT NULL UNIQUE,   -- the key itself is never stored
        created_at INTEGER NOT NULL
    );

    CREATE TABLE web_sessions (
        id_sha256 TEXT PRIMARY KEY,    -- of the cookie's session id
        key_sha256 TEXT NOT NULL,      -- the API key the visitor signed in with (re-checked on every request)
        csrf TEXT NOT NULL,
        expires_at REAL NOT NULL
    );

    CREATE TABLE server_secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
]

# PostgreSQL spellings of the SQLite types the migrations use. heartbeat_at holds unix time with fractions:
# REAL must become float8 (float4 keeps ~7 digits and would lose whole seconds).
_PG_TYPES = [
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
]
# pg_advisory_xact_lock key ("tunehous" in ASCII) that store transactions and migrations take on PostgreSQL.
_WRITE_LOCK = 0x74756E65686F7573
# Connections one process may hold: the API serves a request per thread (AnyIO's default pool has 40), each
# with its own connection; two servers plus workers stay under PostgreSQL's default max_connections (100).
POOL_MAX_SIZE = 32


def new_id(prefix: str, n: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def now() -> int:
    return int(time.time())


def translate_ddl(statement: str, dialect: str) -> str:
    """A migration statement (written for SQLite) in `dialect`'s types."""
    if dialect == "sqlite":
        return statement
    for pattern, pg_type in _PG_TYPES:
        statement = pattern.sub(pg_type, statement)
    return statement


class SqliteConnection(sqlite3.Connection):
    """sqlite3's connection, tagged with its dialect for the few statements that differ."""

    dialect = "sqlite"


class PgRow:
    """A PostgreSQL result row that reads like sqlite3.Row: row["col"], row[0], keys(), dict(row)."""

    __slots__ = ("_names", "_index", "_values")

    def __init__(self, names: tuple[str, ...], index: dict[str, int], values: tuple):
        self._names, self._index, self._values = names, index, values

    def __getitem__(self, key: int | slice | str) -> Any:
        return self._values[self._index[key]] if isinstance(key, str) else self._values[key]

    def keys(self) -> list[str]:
        return list(self._names)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PgRow) and (self._names, self._values) == (other._names, other._values)

    def __repr__(self) -> str:
        return f"PgRow({dict(zip(self._names, self._values, strict=True))!r})"


def _pg_row_factory(cursor: psycopg.Cursor) -> Any:
    """psycopg row factory producing PgRow; the name -> position map is built once per result."""
    if cursor.description is None:
        return no_result
    names = tuple(c.name for c in cursor.description)
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)  # the first column of a name wins, as with sqlite3.Row

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(names, index, tuple(values))

    return make


def _to_pg(sql: str) -> str:
    """`?` placeholders -> psycopg's `%s`; literal `%` (LIKE patterns) escaped first. The store's SQL has no `?`
    inside string literals and never uses PostgreSQL's jsonb `?` operator."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A pooled psycopg connection with the surface the store uses: execute(sql, params) and close().

    The connection is in autocommit mode: a statement outside `transaction()` commits on its own, as with
    sqlite3's isolation_level=None. close() gives it back to the pool (or closes it when it has no pool).
    """

    dialect = "postgresql"

    def __init__(self, raw: psycopg.Connection, pool: ConnectionPool | None):
        self._raw, self._pool = raw, pool

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self._raw.execute(_to_pg(sql), tuple(params))

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        if self._pool is not None:
            self._pool.putconn(raw)
        else:
            raw.close()


Connection = SqliteConnection | PgConnection
Row = sqlite3.Row | PgRow
# What a busy or unreachable database raises, whichever driver (the worker's heartbeat survives these).
OperationalError = (sqlite3.OperationalError, psycopg.OperationalError)


def connect(settings: Settings) -> Connection:
    """A connection for one thread or one request; the schema is migrated on first use. Call .close() after."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # blobs and model caches live there with either database
    path = settings.db_path
    if path is None:
        pool = _pool(settings.db_url)
        return PgConnection(pool.getconn(), pool)
    return _connect_sqlite(path)


def _connect_sqlite(path: Path) -> SqliteConnection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so writers queue on the lock instead of
    # failing mid-transaction with "database is locked" when they upgrade from a read.
    # check_same_thread=False: FastAPI may run a request's dependency and handler on different pool threads;
    # the connection is still used by one request at a time.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False,
                           factory=SqliteConnection)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    _enable_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across process crashes (SIGKILL)
    migrate(conn)
    return conn


def _enable_wal(conn: SqliteConnection, wait_seconds: float = 30.0) -> None:
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


_pools: dict[str, ConnectionPool] = {}
_pools_pid = os.getpid()
_pools_lock = threading.Lock()


def _pool(url: str) -> ConnectionPool:
    """This process's pool for `url`, created (after migrating the schema) on first use."""
    global _pools_pid
    with _pools_lock:
        if _pools_pid != os.getpid():  # a forked child must not share its parent's sockets
            _pools.clear()
            _pools_pid = os.getpid()
        pool = _pools.get(url)
        if pool is None:
            # Migrate on a plain connection first: an unreachable server or bad credentials then fail here
            # with the driver's own message instead of as a pool timeout.
            raw = psycopg.connect(url, autocommit=True, row_factory=_pg_row_factory, connect_timeout=30)
            try:
                migrate(PgConnection(raw, None))
            finally:
                raw.close()
            pool = ConnectionPool(url, min_size=1, max_size=POOL_MAX_SIZE, open=True, timeout=30,
                                  kwargs={"autocommit": True, "row_factory": _pg_row_factory},
                                  # a server restart must not hand out dead connections
                                  check=ConnectionPool.check_connection, name="tunehouse")
            _pools[url] = pool
        return pool


def close_pools() -> None:
    """Close this process's PostgreSQL pools (at exit; tests between databases)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


atexit.register(close_pools)


def schema_version(conn: Connection) -> int:
    """The number of migrations applied to the connection's database (0 for an empty one)."""
    if conn.dialect == "sqlite":
        return conn.execute("PRAGMA user_version").fetchone()[0]
    if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
        return 0
    return conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]


def _set_schema_version(conn: Connection, version: int) -> None:
    if conn.dialect == "sqlite":
        conn.execute(f"PRAGMA user_version = {int(version)}")
    else:
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, now()))


def migrate(conn: Connection) -> int:
    """Apply pending migrations; returns the schema version. Safe when several processes start at once.

    SQLite keeps the version in `PRAGMA user_version` (existing data dirs stay valid); PostgreSQL in a
    `schema_version` table, one row per applied migration. Either way the version is re-read under the write
    lock (BEGIN IMMEDIATE / the advisory lock), and DDL is transactional in both, so a loser of the race sees
    the winner's work and a failed migration leaves nothing behind.
    """
    version = schema_version(conn)
    if version >= len(MIGRATIONS):
        return version
    with transaction(conn):
        if conn.dialect == "postgresql":
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY,"
                         " applied_at BIGINT NOT NULL)")
        version = schema_version(conn)  # another process may have migrated meanwhile
        for i in range(version, len(MIGRATIONS)):
            for statement in MIGRATIONS[i].split(";"):
                if statement.strip():
                    conn.execute(translate_ddl(statement, conn.dialect))
            _set_schema_version(conn, i + 1)
            log.info("database schema migrated to version %d", i + 1)
    return len(MIGRATIONS)


@contextmanager
def transaction(conn: Connection, *, exclusive: bool = True) -> Iterator[Connection]:
    """One writer at a time: read-then-write sequences inside are atomic on both databases.

    SQLite: BEGIN IMMEDIATE takes the database's write lock up front. PostgreSQL: its default READ COMMITTED
    would let two transactions both read a job as queued and both act on it (cancel_job's check-then-update,
    requeue_stale, add_checkpoint's delete-insert-trim, migrations); a transaction-scoped advisory lock gives
    the same one-writer-at-a-time order SQLite has, released by COMMIT/ROLLBACK or when the session dies.
    SERIALIZABLE would need a retry loop around every transaction instead. Reads and single-statement writes
    outside transaction() take no lock. `exclusive=False` skips that lock on PostgreSQL, for a transaction
    whose rows are locked by its own statements (the job claim's FOR UPDATE SKIP LOCKED), so idle workers
    claiming jobs never queue behind other writers.
    """
    if conn.dialect == "sqlite":
        conn.execute("BEGIN IMMEDIATE")
    else:
        conn.execute("BEGIN")
        if exclusive:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_WRITE_LOCK,))
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def blob_path(settings: Settings, file_id: str) -> Path:
    return settings.blobs_dir / file_id


def list_page(
    conn: Connection,
    table: str,
    where: str,
    params: list,
    *,
    after: str | None,
    limit: int,
    order: str = "desc",
) -> tuple[list[Row], bool]:
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
