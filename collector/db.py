"""Database edges shared by every command: connecting and finding out what TimescaleDB offers.

The edition decides how rollups and maintenance work (docs/design.md §3): the full (Community)
edition has continuous aggregates, columnstore and a job scheduler; the Apache edition has
hypertables only, and the same names must still answer the same queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psycopg

Edition = Literal["full", "apache"]


@dataclass(frozen=True)
class TimescaleInfo:
    version: str  # installed extension version, e.g. "2.19.3"
    license: str  # timescaledb.license: "timescale" or "apache"
    scheduler_running: bool  # background job scheduler alive (policies actually run)

    @property
    def edition(self) -> Edition:
        return "full" if self.license == "timescale" else "apache"

    def describe(self) -> str:
        name = "full (Community) edition" if self.edition == "full" else "Apache edition"
        jobs = "job scheduler running" if self.scheduler_running else "no job scheduler"
        return f"TimescaleDB {self.version}, {name}, {jobs}"


def connect(url: str, *, autocommit: bool = False, application_name: str = "ig-collector") -> psycopg.Connection:
    return psycopg.connect(url, autocommit=autocommit, application_name=application_name, connect_timeout=10)


def timescale_info(conn: psycopg.Connection) -> TimescaleInfo | None:
    """None when the extension is not installed in this database."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if row is None:
        return None
    license_ = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()[0] or "apache"
    sched = conn.execute(
        "SELECT count(*) > 0 FROM pg_stat_activity "
        "WHERE backend_type LIKE 'TimescaleDB Background Worker Scheduler%' AND datname = current_database()"
    ).fetchone()[0]
    return TimescaleInfo(version=row[0], license=license_, scheduler_running=bool(sched))
