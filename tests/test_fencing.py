"""The leader's token wired into the writes: a stale epoch's flush is refused by the database and
stores nothing; the current epoch's transactions are each logged with it; and the settings that
name a collector in the election."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from collector.config import ConfigError, load_settings
from collector.leadership import Fence, NotLeader, is_fenced
from collector.metrics import Metrics
from collector.models import Candle, Flag
from collector.repairs import RepairBook, RepairWorker
from collector.store import Writer, WriterError, WriterThread
from collector.store.sql import SMALL_ROWS

T = int(dt.datetime(2024, 3, 8, 10, 0, tzinfo=dt.UTC).timestamp() * 1000)
PAIRS = ("EURUSD", "USDJPY")


@pytest.fixture
def epochs(db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """Epoch 1 of host-a stepped down, epoch 2 of host-b leads."""
    db.execute("TRUNCATE leader_history, flush_log")
    db.execute("UPDATE collector_leader SET epoch = 0, holder = NULL, since = NULL, expires_at = NULL, "
               "renewed_at = NULL, barred_holder = NULL, barred_until = NULL")  # fmt: skip
    assert db.execute("SELECT leader_acquire('host-a', 30)").fetchone() == (1,)
    assert db.execute("SELECT leader_release(1, 'host-a', 60)").fetchone() == (True,)
    assert db.execute("SELECT leader_acquire('host-b', 30)").fetchone() == (2,)
    yield db


def _candle() -> Candle:
    return Candle("EURUSD", "5m", T, 1.1, 1.3, 1.0, 1.2, 1.11, 1.31, 1.01, 1.21, 3, True, "stream")


def _writer(db_url: str, fence: Fence, **kw: int) -> Writer:
    w = Writer(db_url, PAIRS, fence=fence, **kw)
    w.submit_ticks(np.zeros(3, dtype=np.int16), T + np.arange(3), np.full(3, 1.1), np.full(3, 1.2))
    w.submit_candles([_candle()], "closed")
    return w


def _stored(db: psycopg.Connection) -> tuple[int, int]:
    return (db.execute("SELECT count(*) FROM ticks").fetchone()[0],
            db.execute("SELECT count(*) FROM candles").fetchone()[0])  # fmt: skip


def test_a_stale_epochs_flush_is_refused_by_the_database(epochs: psycopg.Connection, db_url: str) -> None:
    w = _writer(db_url, Fence(1, "host-a"))
    with pytest.raises(WriterError) as e:
        w.flush()
    w.close()
    assert is_fenced(e.value)


def test_nothing_of_a_stale_epochs_flush_is_stored(epochs: psycopg.Connection, db_url: str) -> None:
    w = _writer(db_url, Fence(1, "host-a"))
    with pytest.raises(WriterError):
        w.flush()
    w.close()
    assert _stored(epochs) == (0, 0)
    assert epochs.execute("SELECT count(*) FROM flush_log").fetchone() == (0,)


def test_the_right_epoch_under_another_holders_name_is_refused(epochs: psycopg.Connection, db_url: str) -> None:
    w = _writer(db_url, Fence(2, "host-a"))
    with pytest.raises(WriterError) as e:
        w.flush()
    w.close()
    assert is_fenced(e.value) and _stored(epochs) == (0, 0)


def test_a_fence_the_local_clock_no_longer_trusts_refuses_before_writing(
    epochs: psycopg.Connection, db_url: str
) -> None:
    w = _writer(db_url, Fence(2, "host-b", trusted=lambda: False))
    with pytest.raises(NotLeader):
        w.flush()
    w.close()
    assert _stored(epochs) == (0, 0)


def test_the_leaders_flush_is_stored_and_each_candle_names_its_writer(epochs: psycopg.Connection, db_url: str) -> None:
    w = _writer(db_url, Fence(2, "host-b"))
    w.flush()
    w.close()
    assert _stored(epochs) == (3, 1)
    assert epochs.execute("SELECT epoch, holder FROM candle_writers").fetchall() == [(2, "host-b")]


def test_the_leaders_flush_logs_its_pairs_and_ig_time_span(epochs: psycopg.Connection, db_url: str) -> None:
    w = _writer(db_url, Fence(2, "host-b"))
    w.flush()
    w.close()
    row = epochs.execute("SELECT epoch, holder, pairs, from_time, to_time FROM flush_log").fetchone()
    assert row == (2, "host-b", ["EURUSD"], dt.datetime.fromtimestamp(T / 1000, dt.UTC),
                   dt.datetime.fromtimestamp((T + 2) / 1000, dt.UTC))  # fmt: skip


def test_every_transaction_of_a_split_copy_flush_is_fenced_and_logged(epochs: psycopg.Connection, db_url: str) -> None:
    n = 3 * SMALL_ROWS
    w = Writer(db_url, PAIRS, fence=Fence(2, "host-b"), max_tx_ticks=SMALL_ROWS + 1)
    w.submit_ticks(np.zeros(n, dtype=np.int16), T + np.arange(n), np.full(n, 1.1), np.full(n, 1.2))
    w.flush()
    w.close()
    assert epochs.execute("SELECT count(*), min(epoch), max(epoch) FROM flush_log").fetchone() == (3, 2, 2)
    assert _stored(epochs) == (n, 0)


def test_a_stale_epochs_split_flush_stores_no_slice(epochs: psycopg.Connection, db_url: str) -> None:
    n = 3 * SMALL_ROWS
    w = Writer(db_url, PAIRS, fence=Fence(1, "host-a"), max_tx_ticks=SMALL_ROWS + 1)
    w.submit_ticks(np.zeros(n, dtype=np.int16), T + np.arange(n), np.full(n, 1.1), np.full(n, 1.2))
    with pytest.raises(WriterError):
        w.flush()
    w.close()
    assert _stored(epochs) == (0, 0)


def test_the_writer_thread_reports_a_fenced_flush_once_and_stops(epochs: psycopg.Connection, db_url: str) -> None:
    seen: list[BaseException] = []
    told = threading.Event()
    w = _writer(db_url, Fence(1, "host-a"))
    t = WriterThread(w, on_fenced=lambda e: (seen.append(e), told.set())).start()
    assert told.wait(10)
    t._thread.join(5)
    assert (len(seen), t.alive, is_fenced(seen[0])) == (1, False, True)
    w.close()


# ------------------------------------------------------------------ settings
def test_the_lease_defaults_to_10_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLLECTOR_LEASE_S", raising=False)
    assert load_settings().lease_s == 10.0


@pytest.mark.parametrize("value", ["2.9", "121", "soon"])
def test_a_lease_outside_3_to_120_s_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("COLLECTOR_LEASE_S", value)
    with pytest.raises(ConfigError, match="COLLECTOR_LEASE_S"):
        load_settings()


@pytest.mark.parametrize("value", ["3", "120"])
def test_the_lease_bounds_are_accepted(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("COLLECTOR_LEASE_S", value)
    assert load_settings().lease_s == float(value)


def test_the_node_name_defaults_to_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLLECTOR_NODE_NAME", raising=False)
    assert load_settings().node == socket.gethostname()


def test_the_node_name_is_taken_from_collector_node_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_NODE_NAME", "collector-2")
    assert load_settings().node == "collector-2"


def test_an_empty_node_name_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_NODE_NAME", "")
    with pytest.raises(ConfigError, match="COLLECTOR_NODE_NAME"):
        load_settings()


# ------------------------------------------------------------------ the repair worker
def _unserved_repair(db_url: str) -> RepairBook:
    """A complete 20m candle flagged for repair, with backfill off for 20m: one pass gives it up."""
    w = Writer(db_url, ("EURUSD",))
    w.submit_candles([Candle("EURUSD", "20m", T, 1.1, 1.3, 1.0, 1.2, 1.11, 1.31, 1.01, 1.21, 3, True)], "closed")
    w.submit_flags([Flag("EURUSD", "20m", T, "stream_gap")])
    w.flush()
    w.close()
    book = RepairBook()
    book.flag([Flag("EURUSD", "20m", T, "stream_gap")])
    return book


def _worker(db_url: str, fence: Fence) -> RepairWorker:
    settings = load_settings(pairs="EURUSD", timeframes="5m,20m", backfill_timeframes="5m")

    def no_rest() -> None:
        raise AssertionError("REST must not be called")

    book = _unserved_repair(db_url)
    return RepairWorker(settings, db_url, book, Metrics(), lambda: T + 3_600_000, no_rest, fence=fence)  # type: ignore[arg-type]


def test_a_stale_epochs_repair_pass_is_refused_and_changes_nothing(epochs: psycopg.Connection, db_url: str) -> None:
    worker = _worker(db_url, Fence(1, "host-a"))
    before = epochs.execute("SELECT c.*, r.* FROM candles c, candle_repairs r").fetchall()
    with pytest.raises(psycopg.Error) as e:
        worker.run_once(epochs)
    assert is_fenced(e.value)
    assert epochs.execute("SELECT c.*, r.* FROM candles c, candle_repairs r").fetchall() == before
    assert epochs.execute("SELECT resolved_at FROM candle_repairs").fetchall() == [(None,)]


def test_the_leaders_repair_pass_writes_under_its_fence(epochs: psycopg.Connection, db_url: str) -> None:
    worker = _worker(db_url, Fence(2, "host-b"))
    assert worker.run_once(epochs) == 1
    assert epochs.execute("SELECT resolution FROM candle_repairs").fetchall() == [("unrecoverable",)]


# --- a COMMIT whose outcome is unknown, for a fenced writer ------------------------------------
def _status(db: psycopg.Connection, xid: int, started: dt.datetime) -> str:
    from collector.store.sql import FENCED_XACT_STATUS

    return db.execute(FENCED_XACT_STATUS, ([xid], [started])).fetchone()[1]


def test_a_fenced_transaction_that_logged_itself_is_known_committed(epochs: psycopg.Connection, db_url: str) -> None:
    with psycopg.connect(db_url) as w, w.transaction():
        xid, started = w.execute("SELECT pg_current_xact_id()::text::bigint, now()").fetchone()
        Fence(2, "host-b").flush(w, ["EURUSD"], None, None)
    assert _status(epochs, xid, started) == "committed"


def test_a_committed_id_without_our_flush_log_row_is_not_taken_for_our_commit(
    epochs: psycopg.Connection, db_url: str
) -> None:
    """After a failover the promoted replica may hand our lost transaction's id to another one:
    pg_xact_status then says committed, but our flush_log row (written first in ours) is absent."""
    with psycopg.connect(db_url) as w, w.transaction():
        xid, started = w.execute("SELECT pg_current_xact_id()::text::bigint, now()").fetchone()
        w.execute("SELECT 1")  # committed, but not one of our fenced flushes
    assert epochs.execute("SELECT pg_xact_status(%s::text::xid8)", (xid,)).fetchone() == ("committed",)
    assert _status(epochs, xid, started) == "aborted"


def test_an_id_reissued_to_a_later_flush_is_told_apart_by_its_start(epochs: psycopg.Connection, db_url: str) -> None:
    with psycopg.connect(db_url) as w, w.transaction():
        xid, started = w.execute("SELECT pg_current_xact_id()::text::bigint, now()").fetchone()
        Fence(2, "host-b").flush(w, ["EURUSD"], None, None)
    assert _status(epochs, xid, started - dt.timedelta(seconds=5)) == "aborted"
