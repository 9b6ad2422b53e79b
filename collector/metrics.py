"""The collector's Prometheus metrics (docs/design.md §9), one registry per process.

Labels are bounded: `pair` (the 28), `timeframe` (configured), `reason`/`kind`/`cause`/
`status` (fixed vocabularies below). Nothing user-supplied or unbounded becomes a label, and
no credential ever appears in a metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

from .validation import Reject
from .vocabulary import (
    CandleKind,
    LateOutcome,
    LoginResult,
    QuarantineKind,
    ReconnectCause,
    Resolution,
    StreamState,
    Transport,
    UpdateLoss,
)

PREFIX = "ig_collector"

# Label sets derived from the vocabulary that writes them, so a new reason or state cannot
# be counted under a label the dashboards and alert rules (deploy/) have never seen.
REJECT_REASONS: tuple[str, ...] = tuple(r.label for r in Reject)
STREAM_STATES: tuple[str, ...] = tuple(map(str, StreamState))
CANDLE_KINDS: tuple[str, ...] = tuple(map(str, CandleKind))
QUARANTINE_KINDS: tuple[str, ...] = tuple(map(str, QuarantineKind))
AUDIT_CLASSES = ("stream", "rest", "import", "pending", "unrecoverable", "empty", "quiet", "not_covered", "unaccounted")
STREAM_TRANSPORTS: tuple[str, ...] = tuple(map(str, Transport))
RECONNECT_CAUSES: tuple[str, ...] = tuple(map(str, ReconnectCause))
REPAIR_OUTCOMES: tuple[str, ...] = tuple(map(str, Resolution))
LOGIN_RESULTS: tuple[str, ...] = tuple(map(str, LoginResult))
LOST_REASONS: tuple[str, ...] = tuple(map(str, UpdateLoss))
LATE_OUTCOMES: tuple[str, ...] = tuple(map(str, LateOutcome))
# Points spent this allowance period by every spender (collector and bot), from rest_spend.
SPEND_PURPOSES = ("repair", "backfill", "warmup", "bot_fallback", "other")


class PeriodSpendCollector:
    """`ig_collector_rest_points_period{purpose}`, read from the database at scrape time: the
    bot's spends are in rest_spend too, and no process-local counter sees them."""

    def __init__(self, read: Callable[[], dict[str, int] | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by = self._read()
        if by is None:
            return  # database away: no sample rather than a wrong zero
        g = GaugeMetricFamily(
            f"{PREFIX}_rest_points_period",
            "REST points spent this IG allowance period by every spender, by purpose",
            labels=["purpose"],
        )
        for purpose in SPEND_PURPOSES:
            g.add_metric([purpose], by.get(purpose, 0))
        yield g


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        p = PREFIX
        self.info = Info(f"{p}_build", "Collector version and the TimescaleDB edition it found", registry=r)
        self.ticks_received = Counter(
            f"{p}_ticks_received_total", "Price updates received from the stream", ["pair"], registry=r
        )
        self.ticks_accepted = Counter(
            f"{p}_ticks_accepted_total",
            "Ticks that passed validation and entered the candles",
            ["pair"],
            registry=r,
        )
        self.ticks_rejected = Counter(
            f"{p}_ticks_rejected_total",
            "Ticks rejected, by reason (never stored, never in a candle)",
            ["reason"],
            registry=r,
        )
        self.late_ticks = Counter(
            f"{p}_late_ticks_total",
            "Ticks for an already closed bucket: corrected (within the lateness window) or dropped",
            ["outcome"],
            registry=r,
        )
        self.ticks_dropped = Counter(
            f"{p}_ticks_dropped_total", "Tick rows not stored because the write buffer was full", registry=r
        )
        self.updates_lost = Counter(
            f"{p}_updates_lost_total",
            "Stream updates lost before aggregation (server-side drops, consumer queue full); "
            "their buckets are repaired from REST",
            ["reason"],
            registry=r,
        )
        self.ticks_written = Counter(f"{p}_ticks_written_total", "Tick rows committed", registry=r)
        self.candles_written = Counter(
            f"{p}_candles_written_total",
            "Candle rows committed, by timeframe and kind",
            ["timeframe", "kind"],
            registry=r,
        )
        self.write_seconds = Histogram(
            f"{p}_db_write_seconds",
            "Duration of one writer flush (one transaction)",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.write_errors = Counter(f"{p}_db_write_errors_total", "Failed writer flushes (retried)", registry=r)
        self.db_up = Gauge(f"{p}_db_up", "1 when the last database write succeeded", registry=r)
        self.buffer_ticks = Gauge(f"{p}_buffer_ticks", "Tick rows waiting to be written", registry=r)
        self.buffer_capacity = Gauge(f"{p}_buffer_capacity_ticks", "Bound of the tick write buffer", registry=r)
        self.queue_depth = Gauge(f"{p}_queue_depth", "Stream updates waiting for the consumer", registry=r)
        self.stream_connected = Gauge(
            f"{p}_stream_connected",
            "1 while the Lightstreamer session is connected and streaming",
            registry=r,
        )
        self.stream_state = Gauge(
            f"{p}_stream_state", "1 for the current stream state, 0 for the others", ["state"], registry=r
        )
        self.stream_transport = Gauge(
            f"{p}_stream_transport",
            "1 for the Lightstreamer transport in use (WebSocket or HTTP, streaming or polling)",
            ["transport"],
            registry=r,
        )
        self.reconnects = Counter(
            f"{p}_stream_reconnects_total",
            "Reconnects the collector started, by cause",
            ["cause"],
            registry=r,
        )
        self.logins = Counter(f"{p}_logins_total", "IG REST logins, by result", ["result"], registry=r)
        self.tick_age = Gauge(
            f"{p}_tick_age_seconds",
            "Seconds since the newest tick of the pair (IG time)",
            ["pair"],
            registry=r,
        )
        self.market_open = Gauge(f"{p}_market_open", "1 while the FX market is open", registry=r)
        self.close_lag = Histogram(
            f"{p}_candle_close_lag_seconds",
            "From bucket end to the final candle row and NOTIFY committed",
            registry=r,
            buckets=(0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60),
        )
        self.visible_lag = Histogram(
            f"{p}_tick_to_visible_seconds",
            "From a tick's arrival to its forming candle committed",
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
        )
        self.rest_remaining = Gauge(
            f"{p}_rest_allowance_remaining", "IG historical-data points left (last known)", registry=r
        )
        self.rest_total = Gauge(f"{p}_rest_allowance_total", "IG historical-data weekly allowance", registry=r)
        self.rest_exhausted = Gauge(f"{p}_rest_exhausted", "1 while IG refuses history (allowance spent)", registry=r)
        self.rest_points = Counter(
            f"{p}_rest_points_spent_total",
            "REST points spent by the collector, by purpose",
            ["purpose"],
            registry=r,
        )
        self.rest_errors = Counter(f"{p}_rest_errors_total", "Failed REST calls", registry=r)
        self.repairs_pending = Gauge(
            f"{p}_repairs_pending",
            "Buckets waiting to be replaced from REST (partial or missing)",
            registry=r,
        )
        self.repairs = Counter(
            f"{p}_repairs_total",
            "Repair outcomes: rest (replaced), composed (from finer candles, no points), empty, unrecoverable",
            ["outcome"],
            registry=r,
        )
        self.rows_quarantined = Counter(
            f"{p}_rows_quarantined_total",
            "Rows the database refused for good, moved to the quarantine table, by kind",
            ["kind"],
            registry=r,
        )
        self.unaccounted_buckets = Gauge(
            f"{p}_unaccounted_buckets",
            "Buckets of the last 24 h with no complete candle and nothing owing them (ig-collector audit)",
            registry=r,
        )
        self.candles_differing = Gauge(
            f"{p}_candles_differing_from_ticks",
            "Complete stream candles of the last 24 h that differ from their stored ticks (ig-collector audit)",
            registry=r,
        )
        self.audit_buckets = Gauge(
            f"{p}_audit_buckets", "Buckets of the last 24 h by audit class", ["class"], registry=r
        )
        self.audit_last_run = Gauge(
            f"{p}_audit_last_run_timestamp_seconds", "When the collector last audited its database", registry=r
        )
        self.leader = Gauge(f"{p}_leader", "1 while this collector holds the lease and streams", registry=r)
        self.leader_changes = Counter(
            f"{p}_leader_changes", "Times this process became leader or stopped leading", registry=r
        )
        self.leader_epoch = Gauge(f"{p}_leader_epoch", "The epoch this collector leads under (0: none)", registry=r)
        for kind in QUARANTINE_KINDS:
            self.rows_quarantined.labels(kind)
        for cls in AUDIT_CLASSES:
            self.audit_buckets.labels(cls).set(0)
        for reason in REJECT_REASONS:
            self.ticks_rejected.labels(reason)
        for state in STREAM_STATES:
            self.stream_state.labels(state).set(0)
        for cause in RECONNECT_CAUSES:
            self.reconnects.labels(cause)
        for transport in STREAM_TRANSPORTS:
            self.stream_transport.labels(transport).set(0)

    def init_labels(self, pairs: tuple[str, ...], timeframes: tuple[str, ...]) -> None:
        """Create every bounded label child at zero, so rates and alerts see a series from the
        first scrape instead of "no data" until the first event."""
        for pair in pairs:
            self.ticks_received.labels(pair)
            self.ticks_accepted.labels(pair)
        for tf in timeframes:
            for kind in CANDLE_KINDS:
                self.candles_written.labels(tf, kind)
        for outcome in LATE_OUTCOMES:
            self.late_ticks.labels(outcome)
        for reason in LOST_REASONS:
            self.updates_lost.labels(reason)
        for outcome in REPAIR_OUTCOMES:
            self.repairs.labels(outcome)
        for result in LOGIN_RESULTS:
            self.logins.labels(result)
        for purpose in ("repair", "backfill"):
            self.rest_points.labels(purpose)

    def track_period_spend(self, database_url: str, every_s: float = 60.0) -> None:
        """Export points spent this allowance period by purpose (call once at start). Read on a
        thread of its own every `every_s`: a scrape never waits for a database that is away."""
        import threading

        from .status import read_period_spend

        latest: list[dict[str, int] | None] = [read_period_spend(database_url)]

        def refresh() -> None:
            while True:
                time.sleep(every_s)
                latest[0] = read_period_spend(database_url)

        self.registry.register(PeriodSpendCollector(lambda: latest[0]))
        threading.Thread(target=refresh, name="spend-metric", daemon=True).start()

    def set_stream_state(self, state: StreamState) -> None:
        for s in STREAM_STATES:
            self.stream_state.labels(s).set(1 if s == state else 0)
        self.stream_connected.set(1 if state == StreamState.CONNECTED else 0)

    def set_stream_transport(self, transport: str) -> None:
        """The transport the stream uses now (the last one it connected on)."""
        for t in STREAM_TRANSPORTS:
            self.stream_transport.labels(t).set(1 if t == transport else 0)

    def serve(self, host: str, port: int) -> tuple[object, object]:
        """Expose /metrics; loopback by default (COLLECTOR_METRICS_HOST)."""
        return start_http_server(port, addr=host, registry=self.registry)
