"""Orders: a dry run touches no broker; live orders pass size, position and age limits first."""

from __future__ import annotations

import datetime as dt

from trading_bot.orders import OrderExecutor, RiskLimits
from trading_bot.strategy import Signal

BAR = dt.datetime(2025, 1, 8, 10, 0, tzinfo=dt.UTC)
SIGNAL = Signal("EURUSD", "15m", BAR, "ichimoku_ma200", "buy", 1.1)
JUST_CLOSED = BAR + dt.timedelta(minutes=15, seconds=2)
LIMITS = RiskLimits(
    order_size=1.0, max_size=2.0, max_open_positions=2, stop_distance_pips=30, limit_distance_pips=None,
    max_signal_age_bars=1,
)  # fmt: skip


class FakeBroker:
    def __init__(self, open_positions: int = 0) -> None:
        self.positions = open_positions
        self.placed: list[tuple[Signal, float, float]] = []

    def open_positions(self) -> int:
        return self.positions

    def place(self, signal: Signal, size: float, stop_distance: float, limit_distance: float | None) -> str:
        self.placed.append((signal, size, stop_distance))
        return f"REF{len(self.placed)}"


def test_a_dry_run_never_calls_the_broker() -> None:
    broker = FakeBroker()

    assert OrderExecutor(LIMITS, broker, dry_run=True).execute(SIGNAL, JUST_CLOSED) is None
    assert broker.placed == []


def test_a_live_order_is_placed_with_the_configured_size_and_stop() -> None:
    broker = FakeBroker()

    outcome = OrderExecutor(LIMITS, broker, dry_run=False).execute(SIGNAL, JUST_CLOSED)

    assert outcome is not None and (outcome.status, outcome.ref) == ("placed", "REF1")
    assert broker.placed == [(SIGNAL, 1.0, 30)]


def test_an_order_above_the_maximum_size_is_rejected() -> None:
    broker = FakeBroker()
    limits = RiskLimits(3.0, 2.0, 2, 30, None, 1)

    outcome = OrderExecutor(limits, broker, dry_run=False).execute(SIGNAL, JUST_CLOSED)

    assert outcome is not None and outcome.status == "rejected" and "exceeds the maximum" in (outcome.note or "")
    assert broker.placed == []


def test_no_order_beyond_the_maximum_of_open_positions() -> None:
    broker = FakeBroker(open_positions=2)

    outcome = OrderExecutor(LIMITS, broker, dry_run=False).execute(SIGNAL, JUST_CLOSED)

    assert outcome is not None and outcome.status == "skipped" and "maximum is 2" in (outcome.note or "")
    assert broker.placed == []


def test_no_order_on_a_bar_that_closed_long_ago() -> None:
    broker = FakeBroker()

    outcome = OrderExecutor(LIMITS, broker, dry_run=False).execute(SIGNAL, BAR + dt.timedelta(hours=3))

    assert outcome is not None and outcome.status == "skipped" and "too old" in (outcome.note or "")
    assert broker.placed == []
