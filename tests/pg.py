"""Throwaway PostgreSQL servers for the tests and benchmarks: a fresh cluster on a free loopback port, fresh
databases in it, and a stop that removes everything.

The binaries (initdb, pg_ctl) come from PATH or Debian's /usr/lib/postgresql/*/bin (scripts/test.sh installs
the `postgresql` package when they are missing). PostgreSQL refuses to run as root, so as root the cluster is
owned by and run as the `postgres` user, in a directory of its own under the system temp dir (pytest's and
mkdtemp's directories are private to root and unreachable for that user). Durability is switched off
(fsync, synchronous_commit): the cluster lives for one test session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

SUPERUSER = "postgres"
DEBIAN_BIN_DIRS = Path("/usr/lib/postgresql")  # one <major version>/bin per installed server
SERVER_OPTIONS = "-c listen_addresses=127.0.0.1 -c max_connections=300"
# Tests: the cluster lives for one session, durability buys nothing. Benchmarks keep PostgreSQL's defaults.
NO_DURABILITY = " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"


class PostgresNotFound(RuntimeError):
    """initdb/pg_ctl are not installed."""


def find_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl: PATH first, then the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    installed = [p for p in DEBIAN_BIN_DIRS.glob("*/bin/initdb") if p.parts[-3].isdigit()]
    if installed:
        return max(installed, key=lambda p: int(p.parts[-3])).parent
    raise PostgresNotFound(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin. "
        "Install them (Debian: `apt-get install postgresql`; scripts/test.sh does this when run as root).")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    root: Path  # holds data/, the socket and server.log
    port: int
    bin_dir: Path
    run_as: list[str]  # prefix that runs a command as the cluster's owner ([] when we are not root)

    @property
    def url(self) -> str:
        """The superuser's URL for the `postgres` maintenance database (trust auth, no password)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Stop the server at once (nothing in it is worth a clean shutdown) and remove its files."""
        _run(self, "pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _run(cluster: Cluster, tool: str, *args: str) -> None:
    cmd = [*cluster.run_as, str(cluster.bin_dir / tool), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        log = cluster.root / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{tail}")


def start_cluster(root: Path | None = None, durable: bool = False) -> Cluster:
    """initdb + pg_ctl start on a free port; `root` (empty or missing) defaults to a new temp directory.
    `durable` keeps PostgreSQL's default fsync/commit settings (benchmarks); tests run without them.

    As root, the postgres user must be able to reach `root`: leave it None unless you know it can.
    """
    bin_dir = find_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="tunehouse-pg-")) if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", SUPERUSER, "--"]
        shutil.chown(root, SUPERUSER, SUPERUSER)
        if subprocess.run([*run_as, "test", "-w", str(root)]).returncode != 0:
            raise RuntimeError(f"the {SUPERUSER} user cannot reach {root} (a parent directory is private to root); "
                               "call start_cluster() without a directory")
    cluster = Cluster(root=root, port=free_port(), bin_dir=bin_dir, run_as=run_as)
    _run(cluster, "initdb", "-D", str(root / "data"), "-A", "trust", "-U", SUPERUSER, "-E", "UTF8",
         "--locale=C", "--no-sync")
    options = f"-p {cluster.port} -k {root} {SERVER_OPTIONS}" + ("" if durable else NO_DURABILITY)
    _run(cluster, "pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-o", options, "-w",
         "-t", "60", "start")
    return cluster


def create_database(admin_url: str, name: str) -> str:
    """A fresh, empty database `name` (dropped first if it exists) on the server of `admin_url`; its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlsplit(admin_url)._replace(path=f"/{name}").geturl()
