"""`ig-collector replay` into the real database: the stored candles, mid view and rollups equal
the reference aggregation of the file; rejects are counted; restarts and outages lose nothing."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from collector import devdb, tickfile
from collector.cli import main as cli_main
from collector.config import Settings, load_settings
from collector.models import Candle, Tick
from collector.replay import ReplaySummary, replay_file
from collector.store import dt_to_ms, ms_to_dt
from tests.netproxy import TcpProxy
from tests.reference import Arrival, Result, Rules, aggregate, rollup

UTC = dt.UTC
NY = ZoneInfo("America/New_York")
S, M, H = 1000, 60_000, 3_600_000
PAIRS = ("EURUSD", "USDJPY", "GBPUSD")
SETTINGS = load_settings(pairs=",".join(PAIRS), timeframes="5m,15m", db_retry_max_s=0.5)


def ms(*args: int) -> int:
    return dt_to_ms(dt.datetime(*args, tzinfo=UTC))


def generate(seed: int, sessions: list[tuple[int, int]], gap_ms: int = 2000) -> list[Tick]:
    """A random walk per pair over the given (start, end) sessions, in arrival order, with the
    troubles a stream has: ticks a few seconds out of order, equal timestamps, and repeats of
    the previous tick (a re-subscription snapshot)."""
    rng = random.Random(seed)
    price = {"EURUSD": 1.09, "USDJPY": 148.0, "GBPUSD": 1.27}
    out: list[Tick] = []
    for start, end in sessions:
        t = start
        while t < end:
            t += rng.randint(1, gap_ms)
            pair = rng.choice(PAIRS)
            pip = 0.01 if pair.endswith("JPY") else 0.0001
            price[pair] += rng.choice((-1, 0, 1)) * pip
            bid = round(price[pair], 5)
            ask = round(bid + rng.choice((1, 2, 3)) * pip / 2, 5)
            r = rng.random()
            if r < 0.03 and out:
                out.append(out[-1])  # snapshot repeat
                continue
            when = t - rng.randint(1, 8000) if r < 0.08 else t - (rng.randint(0, 1) if r < 0.15 else 0)
            out.append(Tick(pair, when, bid, ask))
    return out


def write_file(path: Path, ticks: list[Tick], extra_lines: str = "") -> Path:
    path.write_text(tickfile.dumps(ticks) + extra_lines)
    return path


def reference(ticks: list[Tick]) -> Result:
    rules = Rules(PAIRS, SETTINGS.timeframes, SETTINGS.close_grace_ms, SETTINGS.lateness_ms,
                  SETTINGS.future_tolerance_ms, 60_000)  # fmt: skip
    return aggregate(rules, [Arrival(t.pair, t.time_ms, t.bid, t.ask, None) for t in ticks])


def stored(conn: psycopg.Connection) -> dict[tuple[str, str, int], Candle]:
    rows = conn.execute(
        "SELECT pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, ask_low, "
        "ask_close, ticks, complete, source, open_time, close_time FROM candles"
    ).fetchall()
    return {
        (r[0], r[1], dt_to_ms(r[2])): Candle(
            r[0], r[1], dt_to_ms(r[2]), *r[3:12], r[12], r[13], dt_to_ms(r[14]), dt_to_ms(r[15])
        )
        for r in rows
    }


def truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE ticks, candles, candle_repairs")


def refresh_rollups(url: str, tsdb) -> None:
    """On the full edition the rollups are continuous aggregates that other tests may have
    materialized; refresh the replayed range so materialized rows are current."""
    if tsdb.edition != "full":
        return
    with psycopg.connect(url, autocommit=True) as conn:
        for view in ("candles_1h", "candles_4h", "candles_1d"):
            conn.execute(f"CALL refresh_continuous_aggregate('{view}', '2024-03-01', '2024-03-20')")


# Thursday 2024-03-14 10:00 UTC to the Friday close at 22:00, then the week reopens on Sunday
# 21:00 UTC (17:00 in New York, on daylight time): four FX trading days, two pairs of them cut
# by the weekend. (The DST-change Sunday itself is tested separately below.)
SESSIONS = [(ms(2024, 3, 14, 10), ms(2024, 3, 15, 22)), (ms(2024, 3, 17, 21, 0, 10), ms(2024, 3, 18, 9))]


@pytest.fixture(scope="module")
def replayed(db_url: str, tsdb, tmp_path_factory) -> tuple[list[Tick], ReplaySummary, Result]:
    ticks = generate(1, SESSIONS, gap_ms=4000)
    path = write_file(tmp_path_factory.mktemp("replay") / "ticks.csv", ticks)
    truncate(db_url)
    summary = replay_file(path, db_url, SETTINGS, progress=False)
    refresh_rollups(db_url, tsdb)
    return ticks, summary, reference(ticks)


def test_replay_stores_exactly_the_reference_candles(replayed, db_url: str) -> None:
    ref = replayed[2]
    with psycopg.connect(db_url) as conn:
        got = stored(conn)
    assert got == ref.candles
    assert len(got) > 600 and any(not c.complete for c in got.values())  # the file ends mid-bucket


def test_replay_stores_every_accepted_tick_once(replayed, db_url: str) -> None:
    ticks, summary, ref = replayed
    with psycopg.connect(db_url) as conn:
        n = conn.execute("SELECT count(*) FROM ticks").fetchone()[0]
    accepted = {(t.pair, t.time_ms, t.bid, t.ask) for t, r in zip(ticks, ref.reasons, strict=True) if r is None}
    assert n == len(accepted) == summary.accepted


def test_replay_summary_counts_match_the_reference(replayed) -> None:
    _, summary, ref = replayed
    assert (summary.rejected, summary.late_corrected, summary.late_dropped) == (
        ref.rejected,
        ref.late_corrected,
        ref.late_dropped,
    )
    assert summary.rejected["duplicate"] > 0
    n_closed = {tf: sum(c.complete for c in ref.candles.values() if c.timeframe == tf) for tf in ("5m", "15m")}
    assert summary.candles_closed == n_closed


def test_candles_mid_is_the_mid_of_the_reference_candles(replayed, db_url: str) -> None:
    _, _, ref = replayed
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT pair, timeframe, bucket, open, high, low, close, ticks FROM candles_mid").fetchall()
    got = {(r[0], r[1], dt_to_ms(r[2])): tuple(r[3:]) for r in rows}
    want = {
        k: (
            (c.bid_open + c.ask_open) / 2,
            (c.bid_high + c.ask_high) / 2,
            (c.bid_low + c.ask_low) / 2,
            (c.bid_close + c.ask_close) / 2,
            c.ticks,
        )
        for k, c in ref.candles.items()
    }
    assert got == want


def _ny_trading_day(bucket_ms: int) -> int:
    """Start (UTC ms) of the FX trading day holding this time: days begin 17:00 New York."""
    local = ms_to_dt(bucket_ms).astimezone(NY).replace(tzinfo=None) - dt.timedelta(hours=17)
    start = dt.datetime.combine(local.date(), dt.time(17), tzinfo=NY)
    return dt_to_ms(start.astimezone(UTC))


ROLLUP_BUCKETS = {
    "candles_1h": lambda b: b - b % H,
    "candles_4h": lambda b: b - b % (4 * H),
    "candles_1d": _ny_trading_day,
}


@pytest.mark.parametrize("view", sorted(ROLLUP_BUCKETS))
def test_rollup_equals_the_reference_rollup_of_15m_candles(replayed, db_url: str, view: str) -> None:
    _, _, ref = replayed
    want = rollup([c for c in ref.candles.values() if c.timeframe == "15m"], ROLLUP_BUCKETS[view])
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            f"SELECT pair, bucket, bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, ask_low, "
            f"ask_close, ticks FROM {view}"
        ).fetchall()
    assert {(r[0], dt_to_ms(r[1])): tuple(r[2:]) for r in rows} == want


def test_daily_rollup_starts_at_17_00_new_york(replayed, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        days = [dt_to_ms(r[0]) for r in conn.execute("SELECT DISTINCT bucket FROM candles_1d ORDER BY 1")]
    assert days == [ms(2024, 3, 13, 21), ms(2024, 3, 14, 21), ms(2024, 3, 15, 21), ms(2024, 3, 17, 21)]


def test_daily_rollup_starts_at_17_00_new_york_on_the_dst_change_sunday(db, db_url: str, tmp_path: Path, tsdb) -> None:
    ticks = [Tick("EURUSD", ms(2024, 3, 8, 21, 10), 1.1, 1.2), Tick("EURUSD", ms(2024, 3, 10, 21, 10), 1.1, 1.2)]
    replay_file(write_file(tmp_path / "dst.csv", ticks), db_url, SETTINGS, progress=False)
    refresh_rollups(db_url, tsdb)
    days = [dt_to_ms(r[0]) for r in db.execute("SELECT bucket FROM candles_1d ORDER BY 1")]
    assert days == [ms(2024, 3, 7, 22), ms(2024, 3, 10, 21)]


# ---------------------------------------------------------------------------------- closing
def test_buckets_the_file_did_not_finish_stay_incomplete(db, db_url: str, tmp_path: Path) -> None:
    t0 = ms(2024, 3, 8, 10)
    path = write_file(tmp_path / "t.csv", [Tick("EURUSD", t0, 1.1, 1.2), Tick("EURUSD", t0 + 6 * M, 1.1, 1.2)])
    replay_file(path, db_url, SETTINGS, progress=False)
    rows = db.execute("SELECT timeframe, bucket, complete FROM candles ORDER BY 1, 2").fetchall()
    assert rows == [
        ("15m", ms_to_dt(t0), False),
        ("5m", ms_to_dt(t0), True),
        ("5m", ms_to_dt(t0 + 5 * M), False),
    ]


def test_close_at_end_closes_every_bucket_and_notifies(db, db_url: str, tmp_path: Path) -> None:
    t0 = ms(2024, 3, 8, 10)
    path = write_file(tmp_path / "t.csv", [Tick("EURUSD", t0, 1.1, 1.2), Tick("EURUSD", t0 + 6 * M, 1.1, 1.2)])
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN candle_closed")
        replay_file(path, db_url, SETTINGS, close_at_end=True, progress=False)
        notes = list(listener.notifies(timeout=2, stop_after=3))
    assert db.execute("SELECT bool_and(complete), count(*) FROM candles").fetchone() == (True, 3)
    assert len(notes) == 3


# ---------------------------------------------------------------------------------- rejects
def test_every_rejection_reason_is_counted_and_replay_carries_on(db, db_url: str, tmp_path: Path) -> None:
    t0 = ms(2024, 3, 8, 10)
    lines = [
        "time,pair,bid,ask",
        f"{t0},EURUSD,1.1,1.2",
        f"{t0 + S},EURUSD,,1.2",  # missing
        f"{t0 + S},EURUSD",  # missing (short row)
        f"{t0 + S},EURUSD,abc,1.2",  # non_numeric
        f"{t0 + S},EURUSD,1.1,1.2,9",  # non_numeric (a comma too many)
        f"{t0 + S}.5,EURUSD,1.1,1.2",  # non_numeric (fractional ms)
        f"{t0 + S},XAUUSD,1.1,1.2",  # unknown_pair
        f"{t0 + S},EURUSD,0,1.2",  # non_positive
        f"{t0 + S},EURUSD,1.3,1.2",  # crossed
        "99999999999999,EURUSD,1.1,1.2",  # future (year 5138)
        f"{t0},EURUSD,1.1,1.2",  # duplicate
        f"{t0 + 20 * M},EURUSD,1.1,1.2",
        f"{t0 - 5 * M},EURUSD,1.1,1.2",  # too_late: both buckets closed over a minute ago
        f"{t0 + 20 * M + S},EURUSD,1.15,1.25",
    ]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    summary = replay_file(path, db_url, SETTINGS, progress=False)
    assert summary.rejected == {
        "missing": 2, "non_numeric": 3, "unknown_pair": 1, "non_positive": 1, "crossed": 1,
        "future": 1, "duplicate": 1, "too_late": 1,
    }  # fmt: skip
    assert (summary.rows, summary.accepted) == (14, 3)
    assert db.execute("SELECT count(*), max(bid) FROM ticks").fetchone() == (3, 1.15)
    assert db.execute("SELECT count(*) FROM candle_repairs").fetchone()[0] == 2


def test_bad_header_exits_2_with_a_clear_message(tmp_path: Path, db_url: str, capsys) -> None:
    path = tmp_path / "x.csv"
    path.write_text("timestamp,symbol,bid,ask\n1,EURUSD,1,2\n")
    assert cli_main(["replay", str(path), "--database-url", db_url]) == 2
    err = capsys.readouterr().err
    assert "header must be 'time,pair,bid,ask'" in err and "timestamp" in err


def test_missing_file_exits_2(tmp_path: Path, db_url: str, capsys) -> None:
    assert cli_main(["replay", str(tmp_path / "nope.csv"), "--database-url", db_url]) == 2
    assert "no such file" in capsys.readouterr().err


def test_replay_command_migrates_an_empty_database_and_prints_a_summary(
    pg_server_url: str, tmp_path: Path, capsys
) -> None:
    url = devdb.fresh_database(pg_server_url, "replay_empty")
    try:
        t0 = ms(2024, 3, 8, 10)
        path = write_file(tmp_path / "t.csv", [Tick("EURUSD", t0, 1.1, 1.2)])
        assert cli_main(["replay", str(path), "--database-url", url, "--close-at-end"]) == 0
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM candles WHERE complete").fetchone()[0] == 2
        out = capsys.readouterr().out
        assert "replayed 1 rows" in out and "1 ticks accepted" in out
    finally:
        devdb.drop_database(pg_server_url, url)


# ---------------------------------------------------------------------------------- restarts
def test_replay_in_two_parts_keeps_open_high_low_and_count_of_the_open_bucket(db, db_url: str, tmp_path: Path) -> None:
    """The writer stops mid-bucket and a new one resumes from what is stored: the result is
    the one uninterrupted replay gives, including a re-subscription repeat of the last tick."""
    ticks = generate(2, [(ms(2024, 3, 8, 10), ms(2024, 3, 8, 12))])
    cut = next(i for i, t in enumerate(ticks) if t.time_ms >= ms(2024, 3, 8, 11, 7, 30))
    part2 = [ticks[cut - 1], *ticks[cut:]]  # the snapshot repeats the last tick seen
    replay_file(write_file(tmp_path / "a.csv", ticks[:cut]), db_url, SETTINGS, progress=False)
    midway = stored(db)
    summary = replay_file(write_file(tmp_path / "b.csv", part2), db_url, SETTINGS, progress=False)
    ref = reference([*ticks[:cut], *part2])
    open_15m = ("EURUSD", "15m", ms(2024, 3, 8, 11))
    assert midway[open_15m].complete is False  # the bucket really was open at the cut
    assert summary.resumed_candles > 0 and summary.rejected["duplicate"] >= 1
    assert stored(db) == ref.candles


def test_database_outage_during_replay_loses_nothing(db, db_url: str, tmp_path: Path) -> None:
    ticks = generate(3, [(ms(2024, 3, 8, 10), ms(2024, 3, 9, 10))], gap_ms=500)
    path = write_file(tmp_path / "big.csv", ticks)
    proxy, url = TcpProxy.for_url(db_url)
    result: list[ReplaySummary] = []
    runner = threading.Thread(
        target=lambda: result.append(replay_file(path, url, SETTINGS, chunk_rows=5000, progress=False))
    )
    try:
        runner.start()
        for threshold in (2_000_000, 6_000_000):  # cut the line twice, mid-replay, for 1.5 s
            deadline = time.monotonic() + 60
            while proxy.bytes_up < threshold and runner.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)
            assert runner.is_alive(), "replay finished before the outage could start"
            proxy.stop()
            time.sleep(1.5)
            proxy.start()
        runner.join(120)
    finally:
        proxy.stop()
    (summary,) = result
    assert summary.write_retries >= 2
    assert stored(db) == reference(ticks).candles
    assert db.execute("SELECT count(*) FROM ticks").fetchone()[0] == summary.accepted


def test_settings_used_here_are_the_defaults_the_rules_assume() -> None:
    assert (SETTINGS.close_grace_ms, SETTINGS.lateness_ms) == (Settings().close_grace_ms, Settings().lateness_ms)
