"""The daemon's metrics: what the threads count, turned into Prometheus series.

The hot paths count in plain ints owned by their thread (the consumer's received totals, the
aggregator's per-reason arrays, the writer's totals); once a second the supervisor adds each
total's growth to its counter here, so no tick pays for a Prometheus lock. A flush's figures
arrive from the writer thread through `record_flush`.
"""

from __future__ import annotations

import logging
from typing import Protocol

from . import timeframes as tfs
from .aggregator import Aggregator
from .config import Settings
from .consumer import Consumer
from .gaps import GapTracker
from .market_hours import is_open
from .metrics import Metrics
from .store import FlushStats, Writer, WriterThread
from .validation import Reject
from .vocabulary import LateOutcome

log = logging.getLogger("collector.daemon")


def record_flush(m: Metrics, st: FlushStats) -> None:
    """The writer committed a flush: called on its thread, so only Prometheus objects here."""
    log.debug(
        "flushed", extra={"ticks": st.ticks, "candles": sum(st.candles.values()), "seconds": round(st.seconds, 4)}
    )
    m.write_seconds.observe(st.seconds)
    m.ticks_written.inc(st.ticks_inserted)
    for (tf, kind), n in st.candles.items():
        m.candles_written.labels(tf, kind).inc(n)
    m.db_up.set(1)
    if st.oldest_submit_age_s:
        m.visible_lag.observe(st.oldest_submit_age_s)
    for _pair, tf, bucket in st.closed:
        lag = (st.committed_at_ms - (bucket + tfs.length_ms(tf))) / 1000
        m.close_lag.observe(max(0.0, lag))


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class MetricsSync:
    """Adds what the data path counted since the last sync; the supervisor's thread only."""

    def __init__(
        self,
        metrics: Metrics,
        settings: Settings,
        *,
        consumer: Consumer,
        gaps: GapTracker,
        aggregator: Aggregator,
        writer: Writer,
        writer_thread: WriterThread,
    ) -> None:
        self.metrics, self.settings = metrics, settings
        self.consumer, self.gaps, self.aggregator = consumer, gaps, aggregator
        self.writer, self.writer_thread = writer, writer_thread
        self._seen: dict[str, int] = {}  # total already added, by counter key

    def sync(self, now_ms: int) -> None:
        m, ag, w = self.metrics, self.aggregator, self.writer
        for pair, n in list(self.consumer.received_by_pair.items()):
            self._add(f"recv:{pair}", n, m.ticks_received.labels(pair))
        for kind, n in list(w.rows_quarantined.items()):
            self._add(f"quarantined:{kind}", n, m.rows_quarantined.labels(kind))
        for r in Reject:
            self._add(f"rej:{r.label}", ag.rejected[r], m.ticks_rejected.labels(r.label))
        for i, pair in enumerate(ag.pairs):
            self._add(f"acc:{pair}", ag.accepted_by_pair[i], m.ticks_accepted.labels(pair))
        self._add("late:corrected", sum(ag.late_corrected), m.late_ticks.labels(LateOutcome.CORRECTED))
        self._add("late:dropped", sum(ag.late_dropped), m.late_ticks.labels(LateOutcome.DROPPED))
        self._add("dropped", w.ticks_dropped, m.ticks_dropped)
        self._add("write_errors", w.flush_errors, m.write_errors)
        m.buffer_ticks.set(w.buffer_depth)
        m.buffer_capacity.set(self.settings.buffer_max_ticks)
        if self.writer_thread.last_error:
            m.db_up.set(0)
        m.market_open.set(1 if is_open(now_ms) else 0)
        last_utm = self.gaps.last_utm
        for pair in self.settings.pairs:
            last = last_utm.get(pair)
            if last is not None:
                m.tick_age.labels(pair).set(max(0.0, (now_ms - last) / 1000))

    def _add(self, key: str, total: int, counter: _Counter) -> None:
        delta = total - self._seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._seen[key] = total
