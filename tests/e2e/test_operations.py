"""The running collector as systemd and Prometheus see it: the notify protocol over a real unix
datagram socket, and a scrape of the live /metrics parsed with prometheus-client's parser."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from .harness import CollectorProcess, wait_for

pytestmark = pytest.mark.timeout(180)


class NotifyReceiver:
    """The receiving end of NOTIFY_SOCKET, bound like systemd binds it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def pump(self) -> list[str]:
        while True:
            try:
                self.messages += self.sock.recv(65536).decode().splitlines()
            except (TimeoutError, BlockingIOError):
                return self.messages


def test_collector_speaks_sd_notify_ready_watchdog_status_stopping(collector: CollectorProcess, tmp_path: Path) -> None:
    rx = NotifyReceiver(tmp_path / "notify")
    collector.env_extra.update(NOTIFY_SOCKET=rx.path, WATCHDOG_USEC="2000000", WATCHDOG_PID="")
    collector.start()
    wait_for(lambda: "READY=1" in rx.pump(), 60, "READY=1")
    wait_for(lambda: rx.pump().count("WATCHDOG=1") >= 2, 30, "watchdog pings")
    assert any(m.startswith("STATUS=stream CONNECTED") for m in rx.pump())
    assert collector.stop() == 0
    assert "STOPPING=1" in rx.pump()
    assert not any("sim-pass" in m or "CST-" in m for m in rx.messages)


def test_live_scrape_exposes_every_metric_the_alerts_and_dashboards_use(collector: CollectorProcess) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ops"))  # tests/ops is a rootdir folder
    from test_prometheus import OUR_METRIC, referenced_queries

    collector.start()
    wait_for(lambda: collector.metric("ig_collector_stream_connected") == 1, 60, "the collector to stream")
    wait_for(lambda: collector.metric("ig_collector_candles_written_total", kind="forming", timeframe="5m") > 0,
             30, "a forming candle")  # fmt: skip
    wait_for(lambda: collector.metric("ig_collector_tick_age_seconds", pair="NZDCAD") > 0, 30, "tick ages")
    samples = collector.metrics()
    names = {re.sub(r"\{.*", "", k) for k in samples}
    referenced = {m for _, expr in referenced_queries() for m in OUR_METRIC.findall(expr)}
    # Histograms and counters are referenced by their _bucket / _total / _count sample names.
    missing = sorted(m for m in referenced if m not in names)
    assert missing == []
    assert samples["ig_collector_market_open"] == 1
    assert samples["ig_collector_db_up"] == 1
    assert samples["ig_collector_buffer_capacity_ticks"] > 0
    assert samples["ig_collector_tick_age_seconds{pair=EURUSD}"] < 600
    assert collector.stop() == 0
