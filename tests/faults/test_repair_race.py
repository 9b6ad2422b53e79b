"""Regression, found by test_stream_drop_while_the_database_is_down_is_repaired_when_it_returns:
a REST repair racing the writer's flush of the same bucket.

After a database outage the writer retries its buffered flush while the repair worker replaces
the outage's buckets from REST. When the writer's row for a bucket was inserted but not yet
committed as the repair began, the repair's "demote the partial stream row" step did not see
it, its REST insert then waited for the writer, found a complete stream row and - by the guard
that protects complete stream candles - left it: the partial candle stayed, marked complete,
and the repair was recorded as done. The interleaving is forced here with two connections."""

from __future__ import annotations

import threading

import psycopg

from collector.models import Candle
from collector.repairs import store_rest
from collector.store import ms_to_dt

from .kit import wait_for

BUCKET = 1_794_996_600_000  # a Wednesday, 5m bucket
REST = Candle("EURUSD", "5m", BUCKET, 1.1, 1.3, 0.9, 1.15, 1.1001, 1.3001, 0.9001, 1.1501, 32, True, "rest")


def _row(db: psycopg.Connection) -> tuple:
    return db.execute(
        "SELECT source, complete, ticks FROM candles WHERE pair = 'EURUSD' AND timeframe = '5m' AND bucket = %s",
        (ms_to_dt(BUCKET),),
    ).fetchone()


def test_rest_repair_replaces_a_stream_row_committed_while_it_ran(db: psycopg.Connection, db_url: str) -> None:
    writer = psycopg.connect(db_url)  # the writer's flush: inserted, not yet committed
    writer.execute(
        "INSERT INTO candles (pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, "
        "ask_open, ask_high, ask_low, ask_close, ticks, complete, source, updated_at) "
        "VALUES ('EURUSD', '5m', %s, 1.1, 1.2, 1.0, 1.1, 1.1001, 1.2001, 1.0001, 1.1001, 13, true, 'stream', now())",
        (ms_to_dt(BUCKET),),
    )
    repair = psycopg.connect(db_url, autocommit=True, application_name="race-repair")
    done = threading.Event()
    thread = threading.Thread(target=lambda: (store_rest(repair, [REST], replace_partial=True), done.set()))
    thread.start()
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'race-repair' AND wait_event_type = 'Lock'"
    )
    wait_for(lambda: db.execute(waiting).fetchone()[0] == 1, 10, "the repair to wait for the writer's uncommitted row")
    writer.commit()
    thread.join(10)
    assert done.is_set()
    assert _row(db) == ("rest", True, 32), "the partial stream candle must be replaced by the REST candle"
    writer.close()
    repair.close()
