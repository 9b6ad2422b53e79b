"""Apply the schema in `sql/`: ordered, idempotent, recorded, edition-aware.

Files are `NNN_name.sql`, or a pair `NNN_name.full.sql` / `NNN_name.apache.sql` of which the one
matching the installed TimescaleDB edition is applied. Each file runs in one transaction and is
recorded in `schema_migrations` with its checksum; a concurrent migrator waits on an advisory
lock. After the files, the settings-driven policies (tick columnstore and retention) are
reconciled on the full edition, or reported as the collector's job on the Apache edition.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from .config import Settings, load_settings
from .db import TimescaleInfo, connect, timescale_info

HELP = "apply the database schema (idempotent) and report the TimescaleDB edition"

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(full|apache))?\.sql$")
_LOCK_KEY = 0x1647_C011  # advisory lock id for migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]


@dataclass
class MigrationReport:
    info: TimescaleInfo
    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def discover(edition: str, sql_dir: Path = SQL_DIR) -> list[Migration]:
    """The migrations for one edition, in order; a version must not be claimed twice."""
    chosen: dict[int, Migration] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise ValueError(f"{path.name}: migration files are named NNN_name[.full|.apache].sql")
        version, name, variant = int(m.group(1)), m.group(2), m.group(3)
        if variant and variant != edition:
            continue
        if version in chosen:
            raise ValueError(f"two migrations claim version {version:03d}: {chosen[version].path.name}, {path.name}")
        chosen[version] = Migration(version, name, path)
    return [chosen[v] for v in sorted(chosen)]


def migrate(url: str, settings: Settings | None = None) -> MigrationReport:
    settings = settings or load_settings()
    with connect(url, autocommit=True, application_name="ig-collector migrate") as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            info = timescale_info(conn)
            assert info is not None
            report = MigrationReport(info=info)
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY, name text NOT NULL, file text NOT NULL,
                       checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT version, file, checksum FROM schema_migrations")}
            for mig in discover(info.edition):
                if mig.version in done:
                    file, checksum = done[mig.version]
                    report.already.append(mig.path.name)
                    if file != mig.path.name:
                        report.warnings.append(
                            f"{mig.path.name}: database has {file} applied (edition changed since?); "
                            "re-create the rollups by hand to switch"
                        )
                    elif checksum != mig.checksum:
                        report.warnings.append(f"{mig.path.name} changed after it was applied; not re-applied")
                    continue
                with conn.transaction():
                    conn.execute(mig.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, file, checksum) VALUES (%s, %s, %s, %s)",
                        (mig.version, mig.name, mig.path.name, mig.checksum),
                    )
                report.applied.append(mig.path.name)
            _reconcile_policies(conn, settings, report)
            if info.edition == "full" and not info.scheduler_running:
                report.warnings.append(
                    "TimescaleDB job scheduler not running in this database: rollups stay correct "
                    "(real-time aggregation) but are not materialized and policies do not run"
                )
            return report
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _reconcile_policies(conn: psycopg.Connection, settings: Settings, report: MigrationReport) -> None:
    """Tick compression and retention follow the settings; re-running changes nothing."""
    if report.info.edition != "full":
        report.warnings.append(
            "Apache edition: no columnstore compression for ticks; retention "
            f"({settings.ticks_retention}) is enforced by the running collector with drop_chunks"
        )
        return
    compressed = conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = 'ticks'"
    ).fetchone()
    if not compressed or not compressed[0]:
        conn.execute(
            "ALTER TABLE ticks SET (timescaledb.compress, timescaledb.compress_segmentby = 'pair', "
            "timescaledb.compress_orderby = 'time')"
        )
    for proc, arg, value in (
        ("policy_compression", "compress_after", settings.ticks_compress_after),
        ("policy_retention", "drop_after", settings.ticks_retention),
    ):
        row = conn.execute(
            "SELECT job_id, config ->> %s FROM timescaledb_information.jobs "
            "WHERE hypertable_name = 'ticks' AND proc_name = %s",
            (arg, proc),
        ).fetchone()
        wanted = conn.execute("SELECT %s::interval::text", (value,)).fetchone()[0]
        current = conn.execute("SELECT %s::interval::text", (row[1],)).fetchone()[0] if row else None
        kind = "compression" if proc == "policy_compression" else "retention"
        if current == wanted:
            report.policies.append(f"ticks {kind} after {wanted} (unchanged)")
            continue
        if row:
            conn.execute("SELECT delete_job(%s)", (row[0],))
        if kind == "compression":
            conn.execute("SELECT add_compression_policy('ticks', compress_after => %s::interval)", (value,))
        else:
            conn.execute("SELECT add_retention_policy('ticks', drop_after => %s::interval)", (value,))
        report.policies.append(f"ticks {kind} after {wanted} ({'changed' if row else 'created'})")


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", help="overrides DATABASE_URL")


def main(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    url = settings.url_or(args.database_url)
    report = migrate(url, settings)
    print(f"{report.info.describe()}")
    for name in report.applied:
        print(f"  applied  {name}")
    if not report.applied:
        print(f"  schema up to date ({len(report.already)} migrations)")
    rollups = "continuous aggregates (real-time)" if report.info.edition == "full" else "plain views"
    print(f"  rollups  candles_1h, candles_4h, candles_1d as {rollups}")
    for p in report.policies:
        print(f"  policy   {p}")
    for w in report.warnings:
        print(f"  warning  {w}")
    return 0
