"""Run the IG simulator: IG's REST gateway and Lightstreamer (TLCP 2.1.0-2.4.0) on loopback.

The real trading-ig and Lightstreamer client talk to it as to IG, so the collector, the demo and
the benchmarks run without an IG account. Point the collector at it with the printed
IG_API_URL and credentials; fault controls live under /_sim/ (see collector.simulator.server).
The market is a seeded random walk (or a recorded tick file replayed on the simulator clock);
--speed runs a fast clock; the printed COLLECTOR_CLOCK runs a collector on it (GET /_sim/clock
serves the same numbers).
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

HELP = "run the IG simulator (REST + Lightstreamer on loopback) for tests, the demo and benchmarks"


def _start_ms(text: str) -> int:
    """ISO 8601 (`2024-07-01T12:00:00Z`, offsets allowed; naive means UTC) -> epoch ms."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--start must be ISO 8601, e.g. 2024-07-01T12:00:00Z ({e})") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _pairs(text: str) -> tuple[str, ...]:
    from collector.pairs import validate_pair

    try:
        return tuple(validate_pair(p) for p in text.split(",") if p.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _zone(text: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(text)
    except (ValueError, ZoneInfoNotFoundError):
        msg = f"unknown time zone {text!r}; use UTC or an IANA name like Europe/London"
        raise argparse.ArgumentTypeError(msg) from None
    return text


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default)")
    p.add_argument("--seed", type=int, default=1, help="random-walk seed (default 1)")
    p.add_argument(
        "--ticks-per-second", type=float, default=50.0, metavar="R", help="total ticks per wall second (default 50)"
    )
    p.add_argument("--pairs", type=_pairs, default=None, help="comma-separated pairs (default: all 28)")
    p.add_argument("--file", metavar="TICKS.csv", help="replay this tick file on the simulator clock instead")
    p.add_argument("--speed", type=_positive(float), default=1.0, metavar="X", help="clock speed (default 1)")
    p.add_argument("--start", type=_start_ms, default=None, metavar="ISO8601", help="simulator clock start")
    p.add_argument("--history-hours", type=float, default=0.0, metavar="H", help="pre-generate H hours of history")
    p.add_argument(
        "--history-ticks", type=int, default=0, metavar="N", help="ticks spread over the history (default 0)"
    )
    p.add_argument("--keepalive-ms", type=_positive(int), default=5000, help="Lightstreamer keepalive (CONOK)")
    p.add_argument("--allowance", type=int, default=10_000, help="weekly REST historical-data points")
    p.add_argument("--token-ttl", type=float, default=12 * 3600.0, metavar="S", help="idle CST/XST lifetime (s)")
    p.add_argument(
        "--rest-time-zone",
        type=_zone,
        default="UTC",
        metavar="ZONE",
        help="time zone REST /prices reads from/to in: UTC (default) or e.g. Europe/London, as IG is believed to",
    )
    p.add_argument(
        "--http-content-length",
        type=_positive(int),
        default=None,
        metavar="BYTES",
        help="cap on an HTTP-streaming response before the client must rebind (default: the client's)",
    )
    p.add_argument("--api-key", default="sim-key")
    p.add_argument("--username", default="sim-user")
    p.add_argument("--password", default="sim-pass")
    p.add_argument("--account-id", default="SIMACC1")


def main(args: argparse.Namespace) -> int:
    from collector.pairs import PAIRS
    from collector.simulator.server import Simulator

    sim = Simulator(
        host=args.host,
        port=args.port,
        seed=args.seed,
        ticks_per_second=args.ticks_per_second,
        pairs=args.pairs or PAIRS,
        start_ms=args.start,
        speed=args.speed,
        tick_file=args.file,
        token_ttl_s=args.token_ttl,
        allowance=args.allowance,
        keepalive_ms=args.keepalive_ms,
        api_key=args.api_key,
        username=args.username,
        password=args.password,
        account_id=args.account_id,
        history_ms=int(args.history_hours * 3_600_000),
        history_ticks=args.history_ticks,
        rest_time_zone=args.rest_time_zone,
        http_content_length=args.http_content_length,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sim.start()
    try:
        clock = sim.clock()
        start = datetime.fromtimestamp(clock["start_ms"] / 1000, UTC).isoformat(timespec="seconds")
        # Simulator credentials are not secrets: printing them is the point.
        print(f"IG simulator listening on {sim.url} (clock starts {start}, speed {clock['speed']}x)")
        print(f"export IG_API_URL={sim.url}")
        print(
            f"export IG_USERNAME={sim.username} IG_PASSWORD={sim.password} IG_API_KEY={sim.api_key} "
            f"IG_ACCOUNT_ID={sim.account_id} IG_ACC_TYPE=demo"
        )
        print(f"export COLLECTOR_CLOCK={sim.market_clock().spec()}")
        print(f"ground truth: {sim.url}/_sim/ticks.csv   controls: {sim.url}/_sim/stats   Ctrl-C stops", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0
