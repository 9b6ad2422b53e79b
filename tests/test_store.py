"""The writer against the real TimescaleDB: ticks stored once, guarded candle upserts, NOTIFY in
the final row's transaction, repairs, restart state, outages, the buffer bound, and a COMMIT
whose outcome the writer could not hear."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import pytest

from collector.aggregator import CandleClosed, CandleCorrected, RepairNeeded
from collector.models import Candle, Tick
from collector.store import FlushStats, Writer, WriterError, WriterThread, dt_to_ms, ms_to_dt
from collector.store.sql import SMALL_ROWS
from tests.netproxy import TcpProxy

UTC = dt.UTC
T = int(dt.datetime(2024, 3, 8, 10, 0, tzinfo=UTC).timestamp() * 1000)
S, M = 1000, 60_000
PAIRS = ("EURUSD", "USDJPY")


@pytest.fixture
def writer(db, db_url: str):
    w = Writer(db_url, PAIRS)
    yield w
    w.close()


def cndl(
    tf: str = "5m", bucket: int = T, *, complete: bool = False, high: float = 1.3, n: int = 3, pair: str = "EURUSD"
):
    return Candle(pair, tf, bucket, 1.1, high, 1.0, 1.2, 1.11, high + 0.01, 1.01, 1.21, n, complete, "stream",
                  bucket + 5 * S, bucket + 50 * S)  # fmt: skip


def stored_candles(db: psycopg.Connection) -> list[tuple]:
    return db.execute(
        "SELECT pair, timeframe, bucket, bid_high, ticks, complete, source FROM candles ORDER BY 1, 2, 3"
    ).fetchall()


def ticks_of(db: psycopg.Connection) -> list[tuple]:
    return db.execute("SELECT pair, time, bid, ask, received_at FROM ticks ORDER BY time, pair").fetchall()


# ---------------------------------------------------------------------------------- ticks
def test_ticks_are_stored_exactly_with_receive_time_or_null(writer: Writer, db) -> None:
    writer.submit_ticks(np.array([0, 1]), np.array([T, T + 1]), np.array([1.1, 150.1]), np.array([1.2, 150.2]))
    writer.submit_tick(0, T + 2, 1.15, 1.25, received_ms=T + 7)
    writer.flush()
    assert ticks_of(db) == [
        ("EURUSD", ms_to_dt(T), 1.1, 1.2, None),
        ("USDJPY", ms_to_dt(T + 1), 150.1, 150.2, None),
        ("EURUSD", ms_to_dt(T + 2), 1.15, 1.25, ms_to_dt(T + 7)),
    ]


def test_a_resubmitted_tick_is_stored_once(writer: Writer, db) -> None:
    for _ in range(2):
        writer.submit_ticks(np.array([0]), np.array([T]), np.array([1.1]), np.array([1.2]))
        writer.flush()
    assert (len(ticks_of(db)), writer.ticks_written, writer.ticks_submitted) == (1, 1, 2)


def test_flush_mixing_stored_and_new_ticks_stores_the_new_ones(writer: Writer, db) -> None:
    writer.submit_ticks(np.array([0]), np.array([T]), np.array([1.1]), np.array([1.2]))
    writer.flush()
    writer.submit_ticks(np.array([0, 0]), np.array([T, T + 1]), np.array([1.1, 1.1]), np.array([1.2, 1.2]))
    writer.flush()
    assert (len(ticks_of(db)), writer.ticks_written, writer.ticks_copy_fallbacks) == (2, 2, 1)


def test_a_flush_too_large_for_one_statement_goes_by_copy_and_still_stores_each_tick_once(writer: Writer, db) -> None:
    n = SMALL_ROWS + 1
    writer.submit_ticks(np.zeros(n, int), T + np.arange(n), np.full(n, 1.1), np.full(n, 1.2))
    writer.flush()
    writer.submit_ticks(np.zeros(n + 1, int), T + np.arange(n + 1), np.full(n + 1, 1.1), np.full(n + 1, 1.2))
    writer.flush()
    assert (len(ticks_of(db)), writer.ticks_written, writer.ticks_copy_fallbacks) == (n + 1, n + 1, 1)


def test_large_flush_is_split_into_transactions_with_candles_in_the_last(db, db_url: str) -> None:
    w = Writer(db_url, PAIRS, max_tx_ticks=2)
    w.submit_ticks(np.zeros(5, int), T + np.arange(5), np.full(5, 1.1), np.full(5, 1.2))
    w.submit_candles([cndl(n=5)], "forming")
    stats = w.flush()
    w.close()
    assert (stats.ticks, stats.ticks_inserted, len(ticks_of(db)), stored_candles(db)[0][4]) == (5, 5, 5, 5)


def test_two_quotes_in_the_same_millisecond_are_both_stored(writer: Writer, db) -> None:
    writer.submit_ticks(np.array([0, 0]), np.array([T, T]), np.array([1.1, 1.1]), np.array([1.2, 1.3]))
    writer.flush()
    assert len(ticks_of(db)) == 2


def test_flush_with_nothing_pending_returns_none(writer: Writer) -> None:
    assert writer.flush() is None


# ---------------------------------------------------------------------------------- candles
def test_forming_candle_is_upserted_incomplete_with_its_open_and_close_times(writer: Writer, db) -> None:
    writer.submit_candles([cndl()], "forming")
    writer.flush()
    row = db.execute(
        "SELECT bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, ask_low, ask_close, ticks, "
        "complete, source, open_time, close_time FROM candles"
    ).fetchone()
    assert row == (1.1, 1.3, 1.0, 1.2, 1.11, 1.31, 1.01, 1.21, 3, False, "stream", ms_to_dt(T + 5 * S),
                   ms_to_dt(T + 50 * S))  # fmt: skip


def test_newer_forming_state_replaces_the_row(writer: Writer, db) -> None:
    writer.submit_candles([cndl(n=3)], "forming")
    writer.flush()
    writer.submit_candles([cndl(n=4, high=1.4)], "forming")
    writer.flush()
    assert stored_candles(db) == [("EURUSD", "5m", ms_to_dt(T), 1.4, 4, False, "stream")]


def test_closed_candle_is_final_and_notified_in_the_same_transaction(writer: Writer, db, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN candle_closed")
        writer.submit_events([CandleClosed(cndl(complete=True))])
        writer.flush()
        notes = list(listener.notifies(timeout=5, stop_after=1))
        # When the notification arrives the final row is already visible to another session.
        complete = listener.execute("SELECT complete FROM candles").fetchone()[0]
    assert [json.loads(n.payload) for n in notes] == [
        {"pair": "EURUSD", "timeframe": "5m", "bucket": "2024-03-08T10:00:00+00:00"}
    ]
    assert complete is True


def test_forming_row_never_overwrites_a_complete_one(writer: Writer, db) -> None:
    writer.submit_candles([cndl(complete=True, n=5)], "closed")
    writer.flush()
    writer.submit_candles([cndl(n=4)], "forming")
    writer.flush()
    assert stored_candles(db) == [("EURUSD", "5m", ms_to_dt(T), 1.3, 5, True, "stream")]


def test_late_correction_updates_the_stored_closed_candle(writer: Writer, db) -> None:
    writer.submit_events([CandleClosed(cndl(complete=True, n=5))])
    writer.flush()
    writer.submit_events([CandleCorrected(cndl(complete=True, n=6, high=1.5))])
    writer.flush()
    assert stored_candles(db) == [("EURUSD", "5m", ms_to_dt(T), 1.5, 6, True, "stream")]
    assert writer.candles_written == {("5m", "closed"): 1, ("5m", "correction"): 1}


@pytest.mark.parametrize("kind", ["forming", "closed", "correction"])
def test_rest_candle_is_never_overwritten_by_the_stream(writer: Writer, db, kind: str) -> None:
    db.execute(
        "SELECT store_rest_candles(%s::jsonb)",
        (json.dumps([{"pair": "EURUSD", "timeframe": "5m", "bucket": "2024-03-08T10:00:00Z",
                      "bid_open": 1, "bid_high": 2, "bid_low": 1, "bid_close": 1, "ask_open": 1,
                      "ask_high": 2, "ask_low": 1, "ask_close": 1, "ticks": 9}]),),
    )  # fmt: skip
    writer.submit_candles([cndl(complete=kind != "forming")], kind)
    writer.flush()
    assert stored_candles(db) == [("EURUSD", "5m", ms_to_dt(T), 2.0, 9, True, "rest")]
    assert writer.candles_written == {}


def test_repair_event_is_recorded_once(writer: Writer, db) -> None:
    for _ in range(2):
        writer.submit_events([RepairNeeded("EURUSD", "5m", T)])
        writer.flush()
    rows = db.execute("SELECT pair, timeframe, bucket, reason, resolved_at FROM candle_repairs").fetchall()
    assert rows == [("EURUSD", "5m", ms_to_dt(T), "late_tick", None)]


def test_ticks_and_candles_commit_together_or_not_at_all(writer: Writer, db) -> None:
    writer.submit_ticks(np.array([0]), np.array([T]), np.array([1.1]), np.array([1.2]))
    writer.submit_candles([cndl()], "forming")
    with psycopg.connect(writer.url) as blocker:
        blocker.execute("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")
        writer._connection().execute("SET lock_timeout = '100ms'")
        writer._conn.commit()
        with pytest.raises(WriterError):  # the candle upsert times out on the lock: transient
            writer.flush()
        assert (ticks_of(db), writer.buffer_depth) == ([], 1)
    writer.flush()
    assert (len(ticks_of(db)), len(stored_candles(db)), writer.buffer_depth) == (1, 1, 0)


def test_on_flush_reports_what_was_committed(db, db_url: str) -> None:
    seen: list[FlushStats] = []
    w = Writer(db_url, PAIRS, on_flush=seen.append)
    w.submit_ticks(np.array([0, 1]), np.array([T, T]), np.array([1.1, 1.1]), np.array([1.2, 1.2]))
    w.submit_events([CandleClosed(cndl(complete=True))])
    w.flush()
    w.close()
    (s,) = seen
    assert (s.ticks, s.ticks_inserted, s.candles, s.notifies, s.closed) == (
        2, 2, {("5m", "closed"): 1}, 1, (("EURUSD", "5m", T),),
    )  # fmt: skip


# ---------------------------------------------------------------------------------- restart state
def test_load_state_returns_open_buckets_recent_closed_ones_and_newest_ticks(writer: Writer, db) -> None:
    now = T + 10 * M + 30 * S
    writer.submit_candles([cndl("15m", T), cndl("5m", T + 10 * M)], "forming")  # open at now
    writer.submit_candles([cndl("5m", T + 5 * M, complete=True, pair="USDJPY")], "closed")  # correctable
    writer.submit_candles([cndl("5m", T + 5 * M)], "forming")  # ended while we were away: partial
    writer.submit_candles([cndl("5m", T, complete=True)], "closed")  # past the lateness window
    writer.submit_ticks(
        np.array([0, 0, 0, 1]),
        np.array([now - 90 * S, now - 30 * S, now - 1 * S, now - 200 * S]),
        np.array([1.1, 1.2, 1.3, 150.0]),
        np.array([1.2, 1.3, 1.4, 150.1]),
    )
    writer.flush()
    state = writer.load_state(now, ("5m", "15m"), close_grace_ms=1500, lateness_ms=60_000, dedupe_window_ms=60_000)
    assert sorted((c.timeframe, c.bucket_ms) for c in state.open_candles) == [("15m", T), ("5m", T + 10 * M)]
    assert sorted((c.pair, c.timeframe, c.bucket_ms, c.complete) for c in state.closed_candles) == [
        ("EURUSD", "5m", T + 5 * M, False),
        ("USDJPY", "5m", T + 5 * M, True),
    ]
    assert cndl("15m", T) in state.open_candles
    assert sorted(state.last_ticks, key=lambda t: t.time_ms) == [
        Tick("USDJPY", now - 200 * S, 150.0, 150.1),
        Tick("EURUSD", now - 30 * S, 1.2, 1.3),
        Tick("EURUSD", now - 1 * S, 1.3, 1.4),
    ]


# ---------------------------------------------------------------------------------- outages
@pytest.fixture
def proxied(db, db_url: str):
    proxy, url = TcpProxy.for_url(db_url)
    yield proxy, url
    proxy.stop()


def test_unreachable_database_keeps_everything_and_flushes_in_order_when_back(proxied, db) -> None:
    proxy, url = proxied
    w = Writer(url, PAIRS, connect_timeout_s=2)
    proxy.stop()
    w.submit_ticks(np.array([0]), np.array([T]), np.array([1.1]), np.array([1.2]))
    w.submit_candles([cndl(n=1)], "forming")
    with pytest.raises(WriterError):
        w.flush()
    w.submit_ticks(np.array([0]), np.array([T + 1]), np.array([1.15]), np.array([1.25]))
    w.submit_events([CandleClosed(cndl(complete=True, n=2))])
    assert (w.buffer_depth, w.db_up, w.flush_errors) == (2, False, 1)
    proxy.start()
    w.flush()
    w.close()
    assert [r[1] for r in ticks_of(db)] == [ms_to_dt(T), ms_to_dt(T + 1)]
    assert stored_candles(db) == [("EURUSD", "5m", ms_to_dt(T), 1.3, 2, True, "stream")]
    assert (w.buffer_depth, w.db_up) == (0, True)


def test_connection_cut_mid_session_is_retried_on_a_new_connection(proxied, db) -> None:
    proxy, url = proxied
    w = Writer(url, PAIRS, connect_timeout_s=2)
    w.submit_ticks(np.array([0]), np.array([T]), np.array([1.1]), np.array([1.2]))
    w.flush()
    proxy.stop()
    proxy.start()  # the old connection is dead; the server is reachable again
    w.submit_ticks(np.array([0]), np.array([T + 1]), np.array([1.1]), np.array([1.2]))
    with pytest.raises(WriterError):
        w.flush()
    w.flush()
    w.close()
    assert len(ticks_of(db)) == 2


def test_buffer_bound_drops_the_oldest_tick_rows_and_counts_them(proxied, db) -> None:
    proxy, url = proxied
    w = Writer(url, PAIRS, buffer_max_ticks=1000, connect_timeout_s=2)
    proxy.stop()
    times = T + np.arange(1500)
    for i in range(0, 1500, 100):
        w.submit_ticks(np.zeros(100, int), times[i : i + 100], np.full(100, 1.1), np.full(100, 1.2))
    w.submit_candles([cndl(n=1500)], "forming")  # candle state is the aggregator's: still exact
    assert (w.buffer_depth, w.ticks_dropped) == (1000, 500)
    proxy.start()
    w.flush()
    w.close()
    stored = db.execute("SELECT min(time), max(time), count(*) FROM ticks").fetchone()
    assert stored == (ms_to_dt(T + 500), ms_to_dt(T + 1499), 1000)
    assert stored_candles(db)[0][4] == 1500


def test_writer_thread_retries_with_backoff_until_the_database_returns(proxied, db) -> None:
    proxy, url = proxied
    w = Writer(url, PAIRS, connect_timeout_s=1)
    thread = WriterThread(w, interval_s=0.05, retry_min_s=0.05, retry_max_s=0.2).start()
    proxy.stop()
    w.submit_ticks(np.array([0]), np.array([T]), np.array([1.1]), np.array([1.2]))
    deadline = time.monotonic() + 10
    while w.flush_errors < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proxy.start()
    deadline = time.monotonic() + 10
    while w.buffer_depth and time.monotonic() < deadline:
        time.sleep(0.02)
    assert thread.stop(5)
    w.close()
    assert (len(ticks_of(db)), w.flush_errors >= 2, w.db_up) == (1, True, True)


def test_writer_thread_flushes_what_is_left_on_stop(writer: Writer, db) -> None:
    thread = WriterThread(writer, interval_s=60).start()
    writer.submit_ticks(np.array([0]), np.array([T]), np.array([1.1]), np.array([1.2]))
    assert thread.stop(5)
    assert len(ticks_of(db)) == 1


def test_submissions_from_another_thread_during_flushes_are_all_written(writer: Writer, db) -> None:
    thread = WriterThread(writer, interval_s=0.001).start()

    def produce() -> None:
        for i in range(200):
            writer.submit_tick(i % 2, T + i, 1.1, 1.2)
            writer.submit_ticks(np.array([0]), np.array([T + 10_000 + i]), np.array([1.1]), np.array([1.2]))

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join()
    assert thread.stop(5)
    assert (db.execute("SELECT count(*) FROM ticks").fetchone()[0], writer.ticks_written) == (400, 400)


def test_dt_and_ms_round_trip_exactly() -> None:
    assert dt_to_ms(ms_to_dt(T + 123)) == T + 123


# ---------------------------------------------------------------------------------- unknown commit outcome
class CommitCutProxy(TcpProxy):
    """Cuts the line at the next COMMIT the client sends: the client never hears the reply.
    With `deliver` the COMMIT reaches the server first (it commits), otherwise it never does."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.armed: bool | None = None  # None: pass everything; True/False: cut, delivering or not

    def _pipe(self, src, dst, up: bool) -> None:
        if not up:
            return super()._pipe(src, dst, up)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.armed is not None and b"COMMIT\x00" in data:
                    deliver, self.armed = self.armed, None
                    src.shutdown(socket.SHUT_RDWR)  # the reply cannot reach the client
                    if deliver:
                        dst.sendall(data)
                        time.sleep(0.2)  # let the server read it before the line drops
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


@pytest.fixture
def commit_cut(db, db_url: str):
    parts = urlsplit(db_url)
    proxy = CommitCutProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    user = parts.netloc.rsplit("@", 1)
    netloc = f"{user[0]}@127.0.0.1:{proxy.port}" if len(user) == 2 else f"127.0.0.1:{proxy.port}"
    yield proxy, urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    proxy.stop()


def _flush_cut_at_commit(w: Writer, proxy: CommitCutProxy, *, deliver: bool) -> None:
    """10 rows stored, then 800 whose COMMIT is cut, then 800 more: 600 of the 800 are
    dropped at the bound of 1000 while nobody knows whether they are stored."""
    w.submit_ticks(np.zeros(10, int), T - 100 + np.arange(10), np.full(10, 1.1), np.full(10, 1.2))
    w.flush()
    w.submit_ticks(np.zeros(800, int), T + np.arange(800), np.full(800, 1.1), np.full(800, 1.2))
    proxy.armed = deliver
    with pytest.raises(WriterError):
        w.flush()
    w.submit_ticks(np.zeros(800, int), T + 800 + np.arange(800), np.full(800, 1.1), np.full(800, 1.2))


def test_rows_of_a_commit_cut_after_it_reached_the_server_are_not_counted_dropped_or_sent_again(commit_cut, db) -> None:
    proxy, url = commit_cut
    w = Writer(url, PAIRS, buffer_max_ticks=1000, connect_timeout_s=2)
    _flush_cut_at_commit(w, proxy, deliver=True)
    assert (w.buffer_depth, w.ticks_dropped) == (1000, 0)
    w.flush()
    w.close()
    gaps = db.execute("SELECT count(*) FROM tick_gaps").fetchone()[0]
    assert (len(ticks_of(db)), gaps, w.ticks_dropped, w.ticks_written, w.ticks_copy_fallbacks) == (1610, 0, 0, 1610, 0)
    assert (w.buffer_depth, w.has_pending()) == (0, False)


def test_rows_of_a_commit_that_never_reached_the_server_are_counted_dropped_once_it_is_known(commit_cut, db) -> None:
    proxy, url = commit_cut
    w = Writer(url, PAIRS, buffer_max_ticks=1000, connect_timeout_s=2)
    _flush_cut_at_commit(w, proxy, deliver=False)
    deadline = time.monotonic() + 10
    while w.has_pending() and time.monotonic() < deadline:  # the server may take a moment to abort it
        w.flush()
        time.sleep(0.05)
    w.close()
    gaps = db.execute("SELECT pair, from_time, to_time, rows, reason FROM tick_gaps").fetchall()
    assert (len(ticks_of(db)), w.ticks_dropped, w.ticks_written) == (1010, 600, 1010)
    assert gaps == [("EURUSD", ms_to_dt(T), ms_to_dt(T + 599), 600, "buffer_full")]
