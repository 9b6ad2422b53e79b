"""Integrity between the collector's own parts (issue 9): flags durable with the candles they
concern, refused rows quarantined while the writer goes on, coverage and tick gaps recorded,
flags spooled across a stop without the database, and the audit's classes."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import numpy as np
import psycopg
import pytest

from collector import logs
from collector.audit import Class, Coverage, Interval, Repair, Row, classify, run_audit
from collector.config import ConfigError, load_settings
from collector.ig_rest import parse_prices
from collector.models import Candle, CoverageMark, Flag
from collector.repairs import RepairBook
from collector.spool import FlagSpool
from collector.store import Writer, WriterError, ms_to_dt, write_flags

UTC = dt.UTC
T = int(dt.datetime(2024, 3, 8, 10, 0, tzinfo=UTC).timestamp() * 1000)  # a Friday, market open
S, M = 1000, 60_000
PAIRS = ("EURUSD", "USDJPY")


@pytest.fixture
def writer(db, db_url: str):
    w = Writer(db_url, PAIRS, buffer_max_ticks=1000)
    yield w
    w.close()


def cndl(bucket: int = T, *, complete: bool = False, pair: str = "EURUSD", tf: str = "5m", n: int = 3) -> Candle:
    return Candle(pair, tf, bucket, 1.1, 1.3, 1.0, 1.2, 1.11, 1.31, 1.01, 1.21, n, complete, "stream",
                  bucket + 5 * S, bucket + 50 * S)  # fmt: skip


def repairs(db: psycopg.Connection) -> list[tuple]:
    return db.execute(
        "SELECT pair, timeframe, bucket, reason, resolved_at IS NULL FROM candle_repairs ORDER BY 1, 2, 3"
    ).fetchall()


def refuse_eurusd_ticks_at(db: psycopg.Connection, t_ms: int) -> None:
    """A CHECK the writer cannot satisfy however often it retries: a permanently refused row."""
    db.execute(
        f"ALTER TABLE ticks ADD CONSTRAINT fault_refuse CHECK (NOT (pair = 'EURUSD' AND time = '{ms_to_dt(t_ms)}'))"
    )


@pytest.fixture
def refusing(db):
    yield db
    for table in ("ticks", "candles"):
        db.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS fault_refuse")


# ---------------------------------------------------------------------------------- durable flags
def test_a_flag_commits_in_the_same_transaction_as_its_partial_candle(writer: Writer, db) -> None:
    writer.submit_flags([Flag("EURUSD", "5m", T, "stream_gap")])
    writer.submit_candles([cndl()], "forming")
    writer.flush()
    assert repairs(db) == [("EURUSD", "5m", ms_to_dt(T), "stream_gap", True)]
    assert db.execute("SELECT complete FROM candles").fetchall() == [(False,)]


def test_a_flag_raised_after_the_bucket_closed_demotes_its_complete_row(writer: Writer, db) -> None:
    writer.submit_candles([cndl(complete=True)], "closed")
    writer.flush()
    writer.submit_flags([Flag("EURUSD", "5m", T, "lost_updates")])
    writer.flush()
    assert db.execute("SELECT complete FROM candles").fetchall() == [(False,)]


def test_flags_survive_a_failed_flush_and_commit_with_the_next(db, db_url: str) -> None:
    w = Writer("postgresql://nobody@127.0.0.1:1/none", PAIRS, connect_timeout_s=1)
    w.submit_flags([Flag("EURUSD", "5m", T, "stream_gap")])
    with pytest.raises(WriterError):
        w.flush()
    w.url = db_url
    w.flush()
    w.close()
    assert repairs(db) == [("EURUSD", "5m", ms_to_dt(T), "stream_gap", True)]


def test_flags_are_kept_once_per_bucket_however_many_are_raised(writer: Writer) -> None:
    for _ in range(10_000):
        writer.submit_flags([Flag("EURUSD", "5m", T, "queue_overflow"), Flag("EURUSD", "15m", T, "queue_overflow")])
    assert len(writer.unwritten_flags()[0]) == 2


def test_a_flag_does_not_reopen_a_bucket_replaced_from_rest_but_a_late_tick_does(db) -> None:
    db.execute(
        "INSERT INTO candle_repairs (pair, timeframe, bucket, reason, resolved_at, resolution) "
        "VALUES ('EURUSD', '5m', %s, 'stream_gap', now(), 'rest')",
        (ms_to_dt(T),),
    )
    assert write_flags(db, [Flag("EURUSD", "5m", T, "lost_updates")]) == 0
    assert write_flags(db, [Flag("EURUSD", "5m", T, "late_tick")]) == 1
    assert repairs(db) == [("EURUSD", "5m", ms_to_dt(T), "late_tick", True)]


def test_the_repair_book_hands_every_flag_to_the_writer(writer: Writer) -> None:
    book = RepairBook(writer)
    book.flag([Flag("EURUSD", "5m", T, "stream_gap")])
    assert book.is_flagged("EURUSD", "5m", T)
    assert writer.unwritten_flags()[0] == [Flag("EURUSD", "5m", T, "stream_gap")]


# ---------------------------------------------------------------------------------- refused rows
def test_a_permanently_refused_tick_is_quarantined_and_the_other_rows_are_written(writer: Writer, refusing) -> None:
    db = refusing
    refuse_eurusd_ticks_at(db, T + 2)
    times = np.array([T, T + 1, T + 2, T + 3])
    writer.submit_ticks(np.array([0, 0, 0, 1]), times, np.array([1.1] * 4), np.array([1.2] * 4))
    writer.submit_candles([cndl()], "forming")
    writer.flush()
    assert db.execute("SELECT count(*) FROM ticks").fetchone()[0] == 3
    (kind, pair, t, data, state) = db.execute("SELECT kind, pair, time, row_data, sqlstate FROM quarantine").fetchone()
    want = ("tick", "EURUSD", ms_to_dt(T + 2), T + 2, 1.1, "23514")
    assert (kind, pair, t, data["time_ms"], data["bid"], state) == want
    assert db.execute("SELECT pair, rows, reason FROM tick_gaps").fetchall() == [("EURUSD", 1, "quarantined")]
    assert writer.rows_quarantined == {"tick": 1}
    assert writer.buffer_depth == 0


def test_the_writer_goes_on_after_a_refused_row(writer: Writer, refusing) -> None:
    refuse_eurusd_ticks_at(refusing, T)
    writer.submit_ticks(np.array([0]), np.array([T]), np.array([1.1]), np.array([1.2]))
    writer.flush()
    writer.submit_ticks(np.array([0]), np.array([T + 1]), np.array([1.1]), np.array([1.2]))
    writer.flush()
    assert refusing.execute("SELECT count(*) FROM ticks").fetchone()[0] == 1


def test_a_refused_candle_is_quarantined_not_announced_and_flagged_for_repair(writer: Writer, refusing) -> None:
    db = refusing
    db.execute("ALTER TABLE candles ADD CONSTRAINT fault_refuse CHECK (pair <> 'USDJPY')")
    writer.submit_candles([cndl(complete=True), cndl(complete=True, pair="USDJPY")], "closed")
    with psycopg.connect(writer.url, autocommit=True) as listener:
        listener.execute("LISTEN candle_closed")
        writer.flush()
        notes = [n.payload for n in listener.notifies(timeout=0.5, stop_after=5)]
    assert db.execute("SELECT pair FROM candles").fetchall() == [("EURUSD",)]
    assert db.execute("SELECT kind, pair FROM quarantine").fetchall() == [("candle", "USDJPY")]
    assert repairs(db) == [("USDJPY", "5m", ms_to_dt(T), "quarantined", True)]
    assert len(notes) == 1 and "EURUSD" in notes[0]


# ---------------------------------------------------------------------------------- coverage, gaps
def test_coverage_marks_open_and_close_one_interval_at_a_time(writer: Writer, db) -> None:
    writer.submit_coverage(CoverageMark(up=True, at_ms=T))
    writer.submit_coverage(CoverageMark(up=False, at_ms=T + M, reason="outage"))
    writer.submit_coverage(CoverageMark(up=True, at_ms=T + 2 * M))
    writer.flush()
    rows = db.execute("SELECT started_at, ended_at, end_reason FROM stream_coverage ORDER BY id").fetchall()
    assert rows == [(ms_to_dt(T), ms_to_dt(T + M), "outage"), (ms_to_dt(T + 2 * M), None, None)]


def test_tick_rows_dropped_at_the_buffer_bound_are_recorded_as_a_tick_gap(writer: Writer, db) -> None:
    n = 1500
    writer.submit_ticks(np.zeros(n, dtype=int), T + np.arange(n), np.full(n, 1.1), np.full(n, 1.2))
    writer.flush()
    assert writer.ticks_dropped == 500
    assert db.execute("SELECT pair, from_time, to_time, rows, reason FROM tick_gaps").fetchall() == [
        ("EURUSD", ms_to_dt(T), ms_to_dt(T + 499), 500, "buffer_full")
    ]


# ---------------------------------------------------------------------------------- spool
def test_flags_spooled_at_a_stop_are_committed_by_the_next_start(tmp_path, db) -> None:
    spool = FlagSpool(tmp_path / "state")
    spool.save([Flag("EURUSD", "5m", T, "lost_updates")], [CoverageMark(up=False, at_ms=T, reason="stopped")])
    spool.save([Flag("USDJPY", "5m", T, "stream_gap")], [])
    db.execute("INSERT INTO stream_coverage (started_at) VALUES (%s)", (ms_to_dt(T - M),))
    with db.transaction():
        assert spool.commit(db, "test") == 2
    spool.clear()
    assert [r[0] for r in repairs(db)] == ["EURUSD", "USDJPY"]
    assert db.execute("SELECT ended_at, end_reason FROM stream_coverage").fetchall() == [(ms_to_dt(T), "stopped")]
    assert not spool.path.exists()
    assert oct(spool.path.parent.stat().st_mode & 0o777) == "0o700"


# ---------------------------------------------------------------------------------- REST answers
def test_a_rest_candle_with_a_null_price_is_skipped_and_reported() -> None:
    good = {"snapshotTimeUTC": "2024-03-08T10:00:00", "lastTradedVolume": 7}
    for f in ("openPrice", "highPrice", "lowPrice", "closePrice"):
        good[f] = {"bid": 1.1, "ask": 1.2}
    bad = {**good, "snapshotTimeUTC": "2024-03-08T10:05:00", "closePrice": {"bid": None, "ask": 1.2}}
    candles, invalid = parse_prices("EURUSD", "5m", [good, bad])
    assert [c.bucket_ms for c in candles] == [T]
    assert list(invalid) == [T + 5 * M] and "closePrice.bid is null" in invalid[T + 5 * M]


# ---------------------------------------------------------------------------------- configuration
def test_a_timeframe_rest_cannot_serve_is_refused_at_start_naming_the_setting(monkeypatch) -> None:
    monkeypatch.setenv("COLLECTOR_TIMEFRAMES", "5m,20m")
    with pytest.raises(ConfigError, match="COLLECTOR_BACKFILL_TIMEFRAMES"):
        load_settings()


def test_a_timeframe_rest_cannot_serve_is_allowed_with_backfill_off_for_it(monkeypatch) -> None:
    monkeypatch.setenv("COLLECTOR_TIMEFRAMES", "5m,20m")
    monkeypatch.setenv("COLLECTOR_BACKFILL_TIMEFRAMES", "5m")
    assert load_settings().repair_timeframes == frozenset({"5m"})


# ---------------------------------------------------------------------------------- log secrets
def test_session_tokens_keep_only_the_last_two_per_slot() -> None:
    for i in range(50):
        logs.register_secret(f"sess-token-{i:04d}", slot="cst-test")
    assert logs.redact("sess-token-0000 sess-token-0049") == "sess-token-0000 ***"
    assert sum(1 for s in logs._secrets if s.startswith("sess-token-")) == 2


def test_redaction_is_safe_while_another_thread_registers_secrets() -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def register() -> None:
        i = 0
        while not done.is_set():
            logs.register_secret(f"token-{i:06d}", slot=f"s{i % 50}")
            i += 1

    t = threading.Thread(target=register)
    t.start()
    try:
        for _ in range(20_000):
            try:
                logs.redact("a line with token-000001 in it")
            except RuntimeError as e:
                errors.append(e)
    finally:
        done.set()
        t.join()
    assert errors == []


def test_the_ig_username_is_masked_in_trading_igs_login_line(caplog) -> None:
    from collector.ig_rest import RestClient

    settings = load_settings(ig_username="trader-jane", ig_password="pw-123456", ig_api_key="key-123456")
    RestClient(settings, "test")
    record = logging.LogRecord("trading_ig.rest", logging.INFO, "", 0, "Creating new v2 session for user '%s'",
                               ("trader-jane",), None)  # fmt: skip
    logs.RedactingFilter().filter(record)
    assert record.getMessage() == "Creating new v2 session for user '***'"


# ---------------------------------------------------------------------------------- audit classes
def test_classify_names_every_kind_of_bucket() -> None:
    done, forming = Row(True, "stream"), Row(False, "stream")
    assert classify(done, None, True, True, None) == (Class.STREAM, None)
    assert classify(Row(True, "rest"), None, False, False, None) == (Class.REST, None)
    assert classify(forming, Repair(False, None), True, True, None) == (Class.PENDING, None)
    assert classify(forming, Repair(True, "unrecoverable"), True, True, None) == (Class.UNRECOVERABLE, None)
    assert classify(None, Repair(True, "empty"), False, False, None) == (Class.EMPTY, None)
    assert classify(None, None, True, False, None) == (Class.QUIET, None)
    assert classify(None, None, False, False, "collector_stopped") == (Class.NOT_COVERED, "collector_stopped")
    assert classify(forming, None, True, True, None) == (Class.UNACCOUNTED, None)
    assert classify(None, None, True, True, None) == (Class.UNACCOUNTED, None)  # ticks but no candle
    assert classify(None, None, False, False, None) == (Class.UNACCOUNTED, None)  # a gap nobody flagged


def test_coverage_tells_a_gap_owed_a_repair_from_one_not_yet_bracketed() -> None:
    cov = Coverage([Interval(T, T + 10 * M, "crashed"), Interval(T + 30 * M, T + 40 * M, "stopped")], T + 60 * M,
                   86_400_000)  # fmt: skip
    assert cov.covers(T, T + 5 * M) and not cov.covers(T + 5 * M, T + 15 * M)
    assert cov.uncovered_reason(T - 10 * M, T - 5 * M) == "before_first_start"
    assert cov.uncovered_reason(T + 15 * M, T + 20 * M) is None  # resumed since: the start must have flagged it
    assert cov.uncovered_reason(T + 35 * M, T + 45 * M) == "collector_stopped"  # ends past the last interval
    assert cov.uncovered_reason(T + 45 * M, T + 50 * M) == "collector_stopped"


def test_audit_finds_an_incomplete_bucket_nothing_owes(db, db_url: str) -> None:
    settings = load_settings(pairs="EURUSD", timeframes="5m")
    db.execute(
        "INSERT INTO stream_coverage (started_at, ended_at, end_reason) VALUES (%s, %s, 'stopped')",
        (ms_to_dt(T), ms_to_dt(T + 20 * M)),
    )
    w = Writer(db_url, ("EURUSD",))
    w.submit_ticks(np.zeros(2, dtype=int), np.array([T + M, T + 2 * M]), np.array([1.1, 1.3]), np.array([1.2, 1.4]))
    closed = Candle("EURUSD", "5m", T, 1.1, 1.3, 1.1, 1.3, 1.2, 1.4, 1.2, 1.4, 2, True, "stream", T + M, T + 2 * M)
    w.submit_candles([closed, cndl(T + 5 * M, n=0)], "closed")
    w.flush()
    w.close()
    db.execute("UPDATE candles SET complete = false WHERE bucket = %s", (ms_to_dt(T + 5 * M),))
    v = run_audit(db, settings, T, T + 15 * M, T + 60 * M)
    assert v.classes == {"5m": {"stream": 1, "unaccounted": 1, "quiet": 1}}
    assert v.unaccounted == (("EURUSD", "5m", T + 5 * M),)
    assert (v.differing, v.checked_against_ticks, v.ok) == ((), 1, False)


def test_audit_counts_a_stream_candle_that_differs_from_its_ticks(db, db_url: str) -> None:
    settings = load_settings(pairs="EURUSD", timeframes="5m")
    db.execute("INSERT INTO stream_coverage (started_at) VALUES (%s)", (ms_to_dt(T),))
    w = Writer(db_url, ("EURUSD",))
    w.submit_ticks(np.zeros(1, dtype=int), np.array([T + M]), np.array([1.1]), np.array([1.2]))
    w.submit_candles([Candle("EURUSD", "5m", T, 1.1, 1.1, 1.1, 1.1, 1.2, 1.2, 1.2, 1.2, 2, True)], "closed")
    w.flush()
    w.close()
    v = run_audit(db, settings, T, T + 5 * M, T + 60 * M)
    assert v.differing == (("EURUSD", "5m", T, "tick count 2 vs 1 in ticks"),)


def test_partial_buckets_of_a_timeframe_without_backfill_are_reported_unrecoverable_at_once(db, db_url: str) -> None:
    from collector.metrics import Metrics
    from collector.repairs import RepairWorker

    settings = load_settings(pairs="EURUSD", timeframes="5m,20m", backfill_timeframes="5m")
    w = Writer(db_url, ("EURUSD",))
    w.submit_candles([cndl(T, tf="20m", complete=True)], "closed")
    w.submit_flags([Flag("EURUSD", "20m", T, "stream_gap")])
    w.flush()
    w.close()
    book = RepairBook()
    book.flag([Flag("EURUSD", "20m", T, "stream_gap")])

    def no_rest():  # a timeframe without backfill never asks IG
        raise AssertionError("REST must not be called")

    worker = RepairWorker(settings, db_url, book, Metrics(), lambda: T + 60 * M, no_rest)
    assert worker.run_once(db) == 1
    assert db.execute("SELECT resolution, last_error, resolved_at IS NOT NULL FROM candle_repairs").fetchall() == [
        ("unrecoverable", "backfill is off for this timeframe", True)
    ]
    assert db.execute("SELECT complete FROM candles").fetchall() == [(False,)]
    assert not book.is_flagged("EURUSD", "20m", T)
