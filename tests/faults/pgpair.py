"""Two real PostgreSQL 15 clusters with TimescaleDB on loopback, the second a streaming replica
of the first: what a two-host deployment's database failover looks like, small enough for a test.

The primary can be stopped hard (`pg_ctl stop -m immediate`: no shutdown checkpoint, like a host
that died) and the replica promoted (`pg_ctl promote`); clients use libpq's own failover through
the multi-host `url()` with `target_session_attrs=read-write`, exactly as the collector and the bot
are meant to in production. Clusters are built the way deploy/devdb.sh builds its own: initdb as
the postgres user under a directory it owns, trust auth on loopback, TimescaleDB preloaded with
its background workers off.

    with PgPair.start() as pair:
        conn = psycopg.connect(pair.url("postgres"))
        ...
        pair.stop_primary_hard()
        took = pair.promote()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("PGPAIR_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_LIB = Path("/usr/lib/postgresql/15/lib")


class PgPairError(RuntimeError):
    """Building or driving the pair failed; the message names the step and its log."""


def available() -> str | None:
    """None when a pair can be built here; else why not (for pytest.skip)."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_basebackup").exists():
        return f"PostgreSQL 15 server binaries not found in {PG_BIN} (run deploy/devdb.sh install)"
    if not list(PG_LIB.glob("timescaledb*.so")):
        return "TimescaleDB is not installed for PostgreSQL 15 (run deploy/devdb.sh install)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot run initdb as the postgres user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _license() -> str:
    """The full edition where its library is installed, like deploy/devdb.sh."""
    if lic := os.environ.get("TIMESCALEDB_LICENSE"):
        return lic
    return "timescale" if list(PG_LIB.glob("timescaledb-tsl-*.so")) else "apache"


@dataclass
class Cluster:
    name: str  # "primary" or "replica"
    port: int
    root: Path  # owned by the cluster's OS user: data/, the socket and the server log

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def settings(self) -> str:
        return (
            f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
            "shared_preload_libraries = 'timescaledb'\n"
            f"timescaledb.license = '{_license()}'\ntimescaledb.telemetry_level = off\n"
            # No job scheduler: as in deploy/devdb.sh, tests must not race policy jobs.
            "timescaledb.max_background_workers = 0\n"
            "max_connections = 100\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
            "wal_keep_size = '256MB'\nfsync = off\nfull_page_writes = off\n"
        )


@dataclass
class PgPair:
    """A primary and its streaming replica. After `promote()` the replica is the only writer;
    `url()` keeps working for NEW connections because libpq skips the dead host."""

    base: Path
    primary: Cluster
    replica: Cluster
    promote_s: float | None = None  # how long the last promote() took until read-write
    _running: set[str] = field(default_factory=set)

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(cls, base: Path | None = None) -> PgPair:
        if why := available():
            raise PgPairError(why)
        base = Path(tempfile.mkdtemp(prefix="pgpair-", dir=base or "/var/tmp"))
        base.chmod(0o755)
        pair = cls(
            base, Cluster("primary", _free_port(), base / "primary"), Cluster("replica", _free_port(), base / "replica")
        )
        try:
            pair._init_primary()
            pair._init_replica()
        except BaseException:
            pair.cleanup()
            raise
        return pair

    def _init_primary(self) -> None:
        p = self.primary
        self._mkdir(p.root)
        self._run(
            "initdb",
            [PG_BIN / "initdb", "-D", p.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
        )
        # initdb's pg_hba.conf already trusts replication connections from 127.0.0.1.
        self._write(p.data / "postgresql.auto.conf", p.settings())
        self._pg_ctl(p, "start")

    def _init_replica(self) -> None:
        r = self.replica
        self._mkdir(r.root)
        self._run(
            "pg_basebackup",
            [PG_BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
             "-D", r.data, "-R", "-X", "stream", "-c", "fast"],
        )  # fmt: skip
        # -R appended primary_conninfo to the copied postgresql.auto.conf; the replica's own
        # port and socket come last so they win over the primary's copied ones.
        auto = r.data / "postgresql.auto.conf"
        self._write(auto, auto.read_text() + f"port = {r.port}\nunix_socket_directories = '{r.root}'\n")
        self._pg_ctl(r, "start")
        self.wait_streaming()

    def cleanup(self) -> None:
        for c in (self.replica, self.primary):
            if c.name in self._running:
                with contextlib.suppress(PgPairError):
                    self._pg_ctl(c, "stop", "-m", "immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # --- faults ------------------------------------------------------------------------------

    def stop_primary_hard(self) -> None:
        """The primary's host died: no checkpoint, no goodbye to clients or the replica."""
        self._pg_ctl(self.primary, "stop", "-m", "immediate")

    def promote(self, timeout_s: float = 60.0) -> float:
        """Promote the replica and wait until it accepts writes; returns the seconds taken."""
        t0 = time.monotonic()
        self._pg_ctl(self.replica, "promote", "-t", str(int(timeout_s)))
        deadline = t0 + timeout_s
        while True:
            try:
                with psycopg.connect(self.replica.url(), autocommit=True, connect_timeout=2) as c:
                    if c.execute("SELECT NOT pg_is_in_recovery()").fetchone() == (True,):
                        break
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise PgPairError(f"replica not read-write {timeout_s} s after promote; see {self.replica.log}")
            time.sleep(0.05)
        self.promote_s = time.monotonic() - t0
        return self.promote_s

    # --- what clients use --------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """libpq's multi-host URL: the first host that accepts writes wins, tried in order."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.replica.port}/{dbname}"
            "?target_session_attrs=read-write&connect_timeout=5"
        )

    def create_database(self, dbname: str) -> str:
        """A database on the current writer (created before a failover it is on both)."""
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{dbname}"')
        return self.url(dbname)

    def wait_streaming(self, timeout_s: float = 30.0) -> None:
        """Until the primary sees its replica streaming."""
        self._wait(
            lambda c: (
                c.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone()[0] == 1
            ),
            timeout_s,
            "the replica to stream from the primary",
        )

    def wait_replayed(self, timeout_s: float = 30.0) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary.url(), autocommit=True) as c:
            lsn = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(self.replica.url(), autocommit=True) as r:
            while r.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone() != (True,):
                if time.monotonic() > deadline:
                    raise PgPairError(f"replica did not replay up to {lsn} within {timeout_s} s")
                time.sleep(0.02)

    # --- plumbing ----------------------------------------------------------------------------

    def _wait(self, ok: Callable[[psycopg.Connection], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            with psycopg.connect(self.primary.url(), autocommit=True) as c:
                if ok(c):
                    return
            if time.monotonic() > deadline:
                raise PgPairError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.05)

    def _pg_ctl(self, c: Cluster, action: str, *extra: str) -> None:
        args: list[str | Path] = [PG_BIN / "pg_ctl", "-D", c.data, "-w"]
        if action == "start":
            args += ["-l", c.log, "-t", "60"]
        self._run(f"pg_ctl {action} ({c.name})", [*args, *extra, action], log=c.log)
        if action == "start":
            self._running.add(c.name)
        elif action == "stop":
            self._running.discard(c.name)

    def _run(self, step: str, argv: list[str | Path], log: Path | None = None) -> None:
        cmd = [str(a) for a in argv]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.base)
        if r.returncode != 0:
            where = f"; see {log}" if log else ""
            raise PgPairError(f"{step} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-2000:]}{where}")

    def _mkdir(self, path: Path) -> None:
        path.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")


@contextlib.contextmanager
def pg_pair() -> Iterator[PgPair]:
    pair = PgPair.start()
    try:
        yield pair
    finally:
        pair.cleanup()
