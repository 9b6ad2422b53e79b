"""The bot's main loop: LISTEN candle_closed, evaluate within a second, poll as a safety net.

The collector sends `NOTIFY candle_closed, '{"pair", "timeframe", "bucket"}'` in the same
transaction as a bar's final row, so when the notification arrives the bar is readable. The
runner then reads that series' indicators (one query), asks the strategy, stores a signal and,
only with live orders enabled, trades. A 15m close that ends an hour, a 4-hour block or an FX
day (17:00 New York) also completes the 1h/4h/1d bar, so those are evaluated then too.

Notifications can be lost (the LISTEN connection drops, the collector is down), so every
`poll_interval_s` the runner also looks at each series' newest complete bar, evaluates any bar
it has not seen, and lets the freshness guard fill the head from REST when the collector is
presumed down. Each bar is evaluated once per process, and the signals table's key makes a
re-evaluation after a restart harmless.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

import psycopg

from collector import timeframes as tfs
from collector.systemd_notify import Notifier

from . import market_hours as mh
from .config import BotSettings
from .freshness import FreshnessGuard
from .market_data import MarketData
from .orders import OrderExecutor
from .signals import SignalStore
from .strategy import Signal, Strategy

log = logging.getLogger(__name__)

CHANNEL = "candle_closed"
NEW_YORK = ZoneInfo("America/New_York")
ROLLUPS = ("1h", "4h", "1d")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_bucket(value: object) -> dt.datetime:
    """A NOTIFY bucket: ISO 8601 text (naive means UTC) or epoch milliseconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return mh.from_ms(int(value))
    if isinstance(value, str):
        if value.isdigit():
            return mh.from_ms(int(value))
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)
    raise ValueError(f"bucket must be ISO text or epoch ms, got {value!r}")


def rollups_closed_by(bucket_15m: dt.datetime) -> list[str]:
    """Rollup timeframes whose bar ends where this 15m bar ends."""
    end = bucket_15m + dt.timedelta(minutes=15)
    out = []
    if end.minute == 0 and end.second == 0:
        out.append("1h")
        if end.hour % 4 == 0:
            out.append("4h")
    local = end.astimezone(NEW_YORK)
    if local.hour == 17 and local.minute == 0:
        out.append("1d")
    return out


class Runner:
    """Evaluates the strategy for the configured pairs and timeframes as bars close."""

    def __init__(
        self,
        settings: BotSettings,
        market: MarketData,
        signals: SignalStore,
        strategy: Strategy,
        executor: OrderExecutor,
        freshness: FreshnessGuard | None = None,
        notifier: Notifier | None = None,
        now: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        if not settings.database_url:
            settings.require("database_url")
        self.url: str = settings.database_url or ""
        self.settings = settings
        self.market, self.signals, self.strategy, self.executor = market, signals, strategy, executor
        self.freshness, self.notifier, self._now = freshness, notifier or Notifier(), now
        self.pairs = settings.bot_pairs
        self.timeframes = settings.bot_timeframes
        # Candle timeframes whose freshness matters: the traded ones, and 15m under any rollup.
        watched = {tf for tf in self.timeframes if tf in ("5m", "15m")}
        if any(tf in ROLLUPS for tf in self.timeframes):
            watched.add("15m")
        self.watched = tuple(sorted(watched, key=tfs.minutes))
        self.listening = threading.Event()  # set while LISTEN is active (tests wait on it)
        self._last_bar: dict[tuple[str, str], dt.datetime] = {}
        self._last_15m: dict[str, dt.datetime] = {}
        self.evaluations = 0

    # --- one bar ----------------------------------------------------------------------------
    def evaluate(self, pair: str, timeframe: str) -> Signal | None:
        """Decide on the newest complete bar of a series, once; returns a new signal or None."""
        frame = self.market.indicators(
            pair, timeframe, self.strategy.bars_needed, displacement=self.settings.displacement
        )
        if frame.empty:
            return None
        bar = frame.index[-1].to_pydatetime()
        key = (pair, timeframe)
        if self._last_bar.get(key) == bar:
            return None
        self._last_bar[key] = bar
        self.evaluations += 1
        if getattr(self.strategy, "technicals", False):
            tech = self.market.technicals(pair, timeframe, len(frame))
            attrs = frame.attrs
            frame = frame.join(tech.drop(columns=frame.columns.intersection(tech.columns)))
            frame.attrs = attrs
        signal = self.strategy.evaluate(frame)
        if signal is None:
            return None
        if not self.signals.save(signal, dry_run=self.executor.dry_run):
            log.info("signal already recorded", extra={"pair": pair, "timeframe": timeframe, "bucket": str(bar)})
            return None
        log.info(
            "signal %s %s %s at %.5f (%s)", signal.side, pair, timeframe, signal.price, signal.reason,
            extra={"pair": pair, "timeframe": timeframe, "bucket": bar.isoformat(), "dry_run": self.executor.dry_run},
        )  # fmt: skip
        outcome = self.executor.execute(signal, self._now())
        if outcome is not None:
            self.signals.set_order(signal, outcome.status, outcome.ref, outcome.note)
        return signal

    def _safe_evaluate(self, pair: str, timeframe: str) -> None:
        try:
            self.evaluate(pair, timeframe)
        except psycopg.OperationalError:
            raise
        except Exception:  # one series' failure must not stop the others
            log.exception("evaluation failed", extra={"pair": pair, "timeframe": timeframe})

    # --- notifications and polling ---------------------------------------------------------
    def on_notify(self, payload: str) -> None:
        try:
            msg = json.loads(payload)
            pair, timeframe, bucket = msg["pair"], msg["timeframe"], parse_bucket(msg["bucket"])
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring malformed candle_closed payload %r: %s", payload[:200], e)
            return
        if pair not in self.pairs:
            return
        if timeframe in self.timeframes:
            self._safe_evaluate(pair, timeframe)
        if timeframe == "15m":
            self._last_15m[pair] = max(bucket, self._last_15m.get(pair, bucket))
            for rollup in rollups_closed_by(bucket):
                if rollup in self.timeframes:
                    self._safe_evaluate(pair, rollup)

    def poll(self) -> None:
        """Safety net: fill stale heads from REST, evaluate every bar not yet seen."""
        newest = self.market.newest_complete(self.pairs, self.watched) if self.watched else {}
        if self.freshness is not None:
            now_ms = mh.to_ms(self._now())
            for pair in self.pairs:
                for tf in self.watched:
                    head = newest.get((pair, tf))
                    if self.freshness.ensure(pair, tf, None if head is None else mh.to_ms(head), now_ms):
                        newest = self.market.newest_complete(self.pairs, self.watched)
        for pair in self.pairs:
            for tf in self.timeframes:
                if tf in ROLLUPS:
                    head = newest.get((pair, "15m"))
                    if head is None or head == self._last_15m.get(pair):
                        continue
                elif (pair, tf) not in newest or newest[(pair, tf)] == self._last_bar.get((pair, tf)):
                    continue
                self._safe_evaluate(pair, tf)
            if (pair, "15m") in newest:
                self._last_15m[pair] = newest[(pair, "15m")]

    # --- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set: LISTEN, react, poll; reconnect with backoff when the database goes."""
        backoff = 1.0
        ready_sent = False
        watchdog_every = self.notifier.watchdog_interval_s()
        last_ping = 0.0
        while not stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, application_name="trading-bot listen") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    log.info(
                        "listening on %s", CHANNEL, extra={"pairs": len(self.pairs), "timeframes": self.timeframes}
                    )
                    self.poll()  # catch up on whatever closed while we were not listening
                    if not ready_sent:
                        self.notifier.ready(f"listening; {len(self.pairs)} pairs x {len(self.timeframes)} timeframes")
                        ready_sent = True
                    backoff = 1.0
                    next_poll = time.monotonic() + self.settings.poll_interval_s
                    while not stop.is_set():
                        wait = max(0.0, min(0.5, next_poll - time.monotonic()))
                        for note in conn.notifies(timeout=wait):
                            if note.channel == CHANNEL:
                                self.on_notify(note.payload)
                            if stop.is_set():
                                break
                        if time.monotonic() >= next_poll:
                            self.poll()
                            next_poll = time.monotonic() + self.settings.poll_interval_s
                        if watchdog_every and time.monotonic() - last_ping >= watchdog_every:
                            self.notifier.watchdog()
                            last_ping = time.monotonic()
            except psycopg.OperationalError as e:
                self.listening.clear()
                log.warning("database connection lost (%s); reconnecting in %.0fs", str(e).strip()[:200], backoff)
                deadline = time.monotonic() + backoff
                while not stop.is_set() and time.monotonic() < deadline:
                    if watchdog_every and time.monotonic() - last_ping >= watchdog_every:
                        self.notifier.watchdog()
                        last_ping = time.monotonic()
                    stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                backoff = min(backoff * 2, 30.0)
        self.listening.clear()
        self.notifier.stopping()
