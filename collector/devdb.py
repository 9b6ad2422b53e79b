"""A TimescaleDB for the quick start, the tests and CI, provided by the project itself.

Order (docs/design.md §7): a URL in the environment wins (`TEST_DATABASE_URL`, then
`DATABASE_URL`); else testcontainers with the official full-edition image when a Docker engine
answers; else a throwaway local cluster from `devdb.sh` (PostgreSQL 15 from Debian and
TimescaleDB built from Debian's source package when missing). Each caller then gets a fresh
database on that server, so runs never see each other's rows.

The script ships inside this package (`script_path()`), so an installed collector needs no
checkout; its cluster lives in `$DEVDB_DIR`, by default `.devdb/` of the working directory
(the checkout, for `make` and CI, where `deploy/devdb.sh` runs the same script).

    python -m collector.devdb url        # start (if needed) and print a server URL
    python -m collector.devdb fresh NAME # create a fresh database and print its URL
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SCRIPT = "devdb.sh"
NOT_INSTALLED = 3  # devdb.sh's exit status for "TimescaleDB is not installed"
TIMESCALE_IMAGE = "timescale/timescaledb:latest-pg16"


class DevDBError(RuntimeError):
    """Providing a database failed; the message says which step and what to do."""


class NotInstalled(DevDBError):
    """The local cluster cannot start before PostgreSQL and TimescaleDB are installed."""


def script_path() -> Path:
    """The cluster script, package data beside this module (pyproject's package-data)."""
    return Path(__file__).resolve().with_name(SCRIPT)


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        r = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


_container = None  # keeps the testcontainers container alive for this process


def _from_docker() -> str:
    global _container
    from testcontainers.postgres import PostgresContainer

    _container = PostgresContainer(TIMESCALE_IMAGE, username="postgres", password="postgres", dbname="postgres")
    _container.start()
    return _container.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")


def run_script(step: str) -> str:
    """One step of devdb.sh (install | start | stop | url); its stdout, or DevDBError with its stderr."""
    env = {**os.environ, "DEVDB_DIR": os.environ.get("DEVDB_DIR") or str(Path.cwd() / ".devdb")}
    r = subprocess.run(["bash", str(script_path()), step], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        error = NotInstalled if r.returncode == NOT_INSTALLED else DevDBError
        raise error(f"{SCRIPT} {step} failed:\n{r.stderr.strip()}")
    return r.stdout.strip()


def _from_local_cluster() -> str:
    try:
        return run_script("start").splitlines()[-1]
    except NotInstalled:
        run_script("install")
    return run_script("start").splitlines()[-1]


def server_url() -> str:
    """A superuser URL to a running PostgreSQL with TimescaleDB available."""
    for var in ("TEST_DATABASE_URL", "DATABASE_URL"):
        if url := os.environ.get(var):
            return url
    if _docker_answers():
        return _from_docker()
    return _from_local_cluster()


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params) if "://" not in url else _replace_path(url, dbname)


def _replace_path(url: str, dbname: str) -> str:
    head, _, tail = url.partition("://")
    hostpart, _, rest = tail.partition("/")
    query = rest.partition("?")[2]
    return f"{head}://{hostpart}/{dbname}" + (f"?{query}" if query else "")


def fresh_database(server: str, prefix: str = "igfx") -> str:
    """Create an empty database with a unique name; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_dbname(server, name)


def drop_database(server: str, url: str) -> None:
    """Drop a database made by `fresh_database`; its TimescaleDB jobs are unscheduled first so
    no policy job is killed mid-run by the forced drop."""
    name = conninfo_to_dict(url)["dbname"]
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
                conn.execute("SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs")
    except psycopg.Error:
        pass  # gone already, or no permission: the drop below still tries
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "url"
    try:
        server = server_url()
        if cmd == "url":
            print(server)
        elif cmd == "fresh":
            print(fresh_database(server, argv[1] if len(argv) > 1 else "igfx"))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except DevDBError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
