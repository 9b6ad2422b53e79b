"""Database edges shared by every command: connecting and finding out what TimescaleDB offers.

The edition decides how rollups and maintenance work (docs/design.md §3): the full (Community)
edition has continuous aggregates, columnstore and a job scheduler; the Apache edition has
hypertables only, and the same names must still answer the same queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import psycopg

from .vocabulary import CandleSource, CoverageEnd, dt_to_ms, ms_to_dt

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


# --- the daemon's statements: start-up recovery, the instruments table, maintenance -------------
# Here rather than in the supervisor, so the daemon's modules hold decisions and this one SQL.

ROLLUP_VIEWS = ("candles_1h", "candles_4h", "candles_1d")


def newest_tick_ms(conn: psycopg.Connection, within_s: float) -> int | None:
    """The newest stored tick no older than `within_s`: where a restart's gap begins when the
    writer's resume state holds no tick (an older one is beyond automatic repair anyway)."""
    return conn.execute(
        "SELECT (extract(epoch FROM max(time)) * 1000)::bigint FROM ticks "
        "WHERE time > now() - make_interval(secs => %s)",
        (within_s,),
    ).fetchone()[0]


def end_crashed_coverage(conn: psycopg.Connection, last_tick_ms: int | None) -> None:
    """An interval a crash left open ends at the last tick that was committed."""
    conn.execute(
        "UPDATE stream_coverage SET ended_at = greatest(started_at, coalesce(%s, started_at)), "
        "end_reason = %s WHERE ended_at IS NULL",
        (ms_to_dt(last_tick_ms) if last_tick_ms is not None else None, CoverageEnd.CRASHED),
    )


def incomplete_unflagged(conn: psycopg.Connection, timeframe: str, from_ms: int, to_ms: int) -> list[tuple[str, int]]:
    """Stream candles of `timeframe` in [from_ms, to_ms) still incomplete with no repair on
    record: (pair, bucket_ms)."""
    rows = conn.execute(
        "SELECT c.pair, c.bucket FROM candles c WHERE c.source = %s AND NOT c.complete "
        "AND c.timeframe = %s AND c.bucket >= %s AND c.bucket < %s AND NOT EXISTS ("
        "SELECT 1 FROM candle_repairs r WHERE r.pair = c.pair AND r.timeframe = c.timeframe "
        "AND r.bucket = c.bucket)",
        (CandleSource.STREAM, timeframe, ms_to_dt(from_ms), ms_to_dt(to_ms)),
    ).fetchall()
    return [(p, dt_to_ms(b)) for p, b in rows]


def publish_instruments(conn: psycopg.Connection, epics: Mapping[str, str]) -> None:
    """Tell readers (Grafana, the bot) which pairs are collected and on which epics
    (`epics`: epic -> pair), in one transaction."""
    with conn.transaction():
        conn.execute("UPDATE instruments SET enabled = (pair = ANY(%s)), updated_at = now()", (list(epics.values()),))
        conn.cursor().executemany(
            "UPDATE instruments SET epic = %s, updated_at = now() WHERE pair = %s AND epic <> %s",
            [(epic, pair, epic) for epic, pair in epics.items()],
        )


def drop_old_ticks(conn: psycopg.Connection, retention: str) -> None:
    conn.execute("SELECT drop_chunks('ticks', older_than => %s::interval)", (retention,))


def rollup_jobs_failing(conn: psycopg.Connection) -> bool:
    return bool(
        conn.execute(
            "SELECT count(*) FROM timescaledb_information.job_stats WHERE last_run_status = 'Failed' "
            "AND hypertable_name = ANY(%s)",
            (list(ROLLUP_VIEWS),),
        ).fetchone()[0]
    )


def refresh_rollups(conn: psycopg.Connection) -> None:
    """Materialize the last three days of every rollup, up to an hour ago."""
    for view in ROLLUP_VIEWS:
        conn.execute(
            f"CALL refresh_continuous_aggregate('{view}', now() - interval '3 days', now() - interval '1 hour')"
        )
