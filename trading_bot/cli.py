"""`trading-bot` command line: signals | run | warmup | plot.

Every subcommand reads the same validated settings (DATABASE_URL, IG_*, TRADING_BOT_*; see
trading_bot/config.py) and exits 2 with the names of the bad settings when they are wrong.
Heavy imports (pandas, matplotlib, trading-ig) happen inside the subcommands so `--help` is
instant.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from collector.config import ConfigError

from .config import BOT_TIMEFRAMES, BotSettings, load_bot_settings

if TYPE_CHECKING:
    from rich.table import Table

    from .market_data import MarketData

log = logging.getLogger("trading_bot")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _pairs(args: argparse.Namespace, settings: BotSettings) -> list[str]:
    from collector.pairs import validate_pair

    chosen = [p for group in (args.pair or []) for p in _csv(group)]
    try:
        return [validate_pair(p) for p in chosen] if chosen else list(settings.bot_pairs)
    except ValueError as e:
        raise ConfigError(f"--pair: {e}") from None


def _timeframes(
    args: argparse.Namespace, settings: BotSettings, allowed: tuple[str, ...] = BOT_TIMEFRAMES
) -> list[str]:
    chosen = [t for group in (args.timeframe or []) for t in _csv(group)]
    bad = [t for t in chosen if t not in allowed]
    if bad:
        raise ConfigError(f"--timeframe: {', '.join(bad)} not one of {', '.join(allowed)}")
    return chosen or [t for t in settings.bot_timeframes if t in allowed]


def _settings(args: argparse.Namespace) -> BotSettings:
    overrides = {"database_url": args.database_url} if getattr(args, "database_url", None) else {}
    settings = load_bot_settings(args.config, **overrides)
    settings.require("database_url")
    return settings


@contextmanager
def _market(settings: BotSettings) -> Iterator[MarketData]:
    from .market_data import MarketData, open_pool

    pool = open_pool(settings.database_url or "", max_size=settings.pool_max_size)
    try:
        yield MarketData(pool)
    finally:
        pool.close()


def _fmt(v: float | None, digits: int = 5) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


# --- signals ----------------------------------------------------------------------------------
def cmd_signals(args: argparse.Namespace) -> int:
    """Print the newest complete bar's indicators per pair and timeframe, and the latest signals."""
    from rich.console import Console
    from rich.table import Table

    from .signals import SignalStore

    settings = _settings(args)
    pairs, timeframes = _pairs(args, settings), _timeframes(args, settings)
    console = Console()
    with _market(settings) as market:
        table = Table(title="Latest complete bars (mid prices)", title_justify="left")
        for col in ("pair", "tf", "bar (UTC)", "close", "MA-200", "Tenkan", "Kijun", "cloud", "vs cloud", "trend"):
            table.add_column(col, justify="right" if col not in ("pair", "tf", "vs cloud", "trend") else "left")
        for pair in pairs:
            digits = 3 if pair.endswith("JPY") else 5
            for tf in timeframes:
                f = market.indicators(pair, tf, 1, displacement=settings.displacement)
                if f.empty:
                    table.add_row(pair, tf, "no bars", *["-"] * 7)
                    continue
                r = f.iloc[-1]
                top, bottom = max(r.senkou_a, r.senkou_b), min(r.senkou_a, r.senkou_b)
                vs_cloud = (
                    "-" if top != top else "above" if r.close > top else "below" if r.close < bottom else "inside"
                )
                trend = "-" if r.ma_200 != r.ma_200 else "up" if r.close > r.ma_200 else "down"
                cloud = "-" if top != top else f"{_fmt(bottom, digits)}..{_fmt(top, digits)}"
                table.add_row(
                    pair, tf, f.index[-1].strftime("%Y-%m-%d %H:%M"), _fmt(r.close, digits), _fmt(r.ma_200, digits),
                    _fmt(r.tenkan, digits), _fmt(r.kijun, digits), cloud, vs_cloud, trend,
                )  # fmt: skip
        console.print(table)
        console.print(_technicals_table(market, pairs, timeframes))
        stored = SignalStore(market.pool).latest(pairs, timeframes, limit=args.limit)
    sig = Table(title=f"Latest signals ({len(stored)})", title_justify="left")
    for col in ("bar (UTC)", "pair", "tf", "strategy", "side", "price", "order", "reason"):
        sig.add_column(col)
    for s in stored:
        order = "dry run" if s.dry_run else (s.order_status or "pending") + (f" {s.order_ref}" if s.order_ref else "")
        sig.add_row(
            s.bucket.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M"), s.pair, s.timeframe, s.strategy,
            s.side, _fmt(s.price, 3 if s.pair.endswith("JPY") else 5), order, s.reason,
        )  # fmt: skip
    console.print(sig)
    return 0


def _technicals_table(market: MarketData, pairs: list[str], timeframes: list[str]) -> Table:
    """The rest of the bot's indicator set on the newest complete bar, and the volume profile's
    POC and value area over the last 90 bars (technicals() and volume_profile() in SQL)."""
    from rich.table import Table

    table = Table(title="Technicals of the latest complete bars (TA-Lib definitions)", title_justify="left")
    cols = ("pair", "tf", "ADX", "+DI", "-DI", "Aroon up", "Aroon dn", "UltOsc", "OBV z", "MA-21", "MA-50", "POC",
            "value area (70%)")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col in ("pair", "tf") else "right")
    for pair in pairs:
        digits = 3 if pair.endswith("JPY") else 5
        for tf in timeframes:
            f = market.technicals(pair, tf, 1)
            if f.empty:
                table.add_row(pair, tf, *["-"] * (len(cols) - 2))
                continue
            r = f.iloc[-1]
            prof = market.volume_profile(pair, tf)
            poc = prof.loc[prof["poc"]]
            area = prof.loc[prof["in_value_area"]]
            table.add_row(
                pair, tf, _fmt(r.adx_14, 1), _fmt(r.plus_di_14, 1), _fmt(r.minus_di_14, 1), _fmt(r.aroon_up_25, 0),
                _fmt(r.aroon_down_25, 0), _fmt(r.ultosc, 1), _fmt(r.obv_z_50, 2), _fmt(r.ma_21, digits),
                _fmt(r.ma_50, digits),
                "-" if poc.empty else _fmt((poc.price_low.iloc[0] + poc.price_high.iloc[0]) / 2, digits),
                "-" if area.empty else f"{_fmt(area.price_low.min(), digits)}..{_fmt(area.price_high.max(), digits)}",
            )  # fmt: skip
    return table


# --- run --------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """Run the bot until SIGTERM or Ctrl-C."""
    from collector import logs
    from collector.ig_rest import RestClient

    from .freshness import FreshnessGuard
    from .market_data import MarketData, open_pool
    from .orders import IGBroker, OrderExecutor, RiskLimits
    from .runner import Runner
    from .signals import SignalStore
    from .strategy import strategy_by_name

    settings = _settings(args)
    logs.setup(settings.log_level, settings.log_format)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pool = open_pool(settings.database_url or "", max_size=settings.pool_max_size)
    guard = None
    try:
        if settings.rest_fallback and settings.can_use_rest:
            guard = FreshnessGuard(
                pool,
                lambda: RestClient(settings, spender="trading_bot", reserve_points=settings.bot_rest_reserve_points),
                margin_s=settings.stale_margin_s,
                max_bars=settings.rest_max_bars,
                requests_per_minute=settings.rest_requests_per_minute,
            )
        elif settings.rest_fallback:
            log.warning(
                "no IG credentials: the REST freshness fallback is off (set IG_USERNAME, IG_PASSWORD, IG_API_KEY)"
            )
        broker = IGBroker(settings) if settings.live_orders else None
        executor = OrderExecutor(RiskLimits.from_settings(settings), broker, dry_run=not settings.live_orders)
        log.warning(
            "LIVE ORDERS ENABLED" if settings.live_orders else "dry run: signals are recorded, no orders are sent"
        )
        runner = Runner(
            settings, MarketData(pool), SignalStore(pool), strategy_by_name(settings.strategy), executor, guard
        )
        runner.run(stop)
    finally:
        if guard is not None:
            guard.close()
        pool.close()
    return 0


# --- warmup -----------------------------------------------------------------------------------
def cmd_warmup(args: argparse.Namespace) -> int:
    """Plan (or buy, within the budget) the history MA-200 needs."""
    from rich.console import Console
    from rich.table import Table

    from collector.ig_rest import RestBudget, RestClient

    from .freshness import store_candles
    from .warmup import CANDLE_TIMEFRAMES, apply_plan, make_plan, stored_candles

    settings = _settings(args)
    pairs = _pairs(args, settings)
    timeframes = _timeframes(args, settings, CANDLE_TIMEFRAMES) if args.timeframe else list(CANDLE_TIMEFRAMES)
    target = args.target or settings.warmup_target_bars
    reserve = settings.bot_rest_reserve_points if args.reserve is None else args.reserve
    budget = RestBudget(settings.database_url or "", "trading_bot", reserve)
    console = Console()
    now = dt.datetime.now(dt.UTC)
    with _market(settings) as market:
        plan = make_plan(market, pairs, timeframes, target, budget.available(), now)
        fundable = plan.fundable()
        table = Table(title=f"Warm-up to {target} bars (5m first; 15m composed from them, then bought)",
                      title_justify="left")  # fmt: skip
        cols = ("pair", "tf", "bars", "composed (free)", "missing", "REST points", "fundable now",
                "stream alone reaches it")  # fmt: skip
        for col in cols:
            table.add_column(col, justify="left" if col in ("pair", "tf", "stream alone reaches it") else "right")
        for it in plan.items:
            eta = "now" if it.bars >= it.target else it.stream_eta.strftime("%a %Y-%m-%d %H:%M UTC")
            table.add_row(
                it.pair, it.timeframe, str(it.bars), str(it.composed), str(it.missing), str(it.cost_points),
                str(fundable[(it.pair, it.timeframe)]), eta,
            )  # fmt: skip
        console.print(table)
        short = plan.total_cost - plan.available_points
        console.print(
            f"total {plan.total_cost} points; the budget allows {plan.available_points} now "
            f"(IG remaining minus a reserve of {reserve}, --reserve or TRADING_BOT_REST_RESERVE_POINTS)"
            + (f"; {short} short: wait for the weekly reset or lower the reserve" if short > 0 else "")
        )
        if not args.apply:
            return 0
        if not settings.can_use_rest:
            raise ConfigError("--apply needs IG_USERNAME, IG_PASSWORD and IG_API_KEY")
        client = RestClient(settings, spender="trading_bot", reserve_points=reserve)
        try:
            results = apply_plan(
                plan, client, lambda candles: store_candles(market.pool, candles), budget.available,
                lambda pair, tf, lo, hi: stored_candles(market, pair, tf, lo, hi),
            )  # fmt: skip
        finally:
            client.logout()
    done = Table(title="Warm-up applied", title_justify="left")
    for col in ("pair", "tf", "asked", "stored", "note"):
        done.add_column(col)
    for r in results:
        done.add_row(r.pair, r.timeframe, str(r.asked), str(r.stored), r.note)
    console.print(done)
    return 0


# --- plot -------------------------------------------------------------------------------------
def cmd_plot(args: argparse.Namespace) -> int:
    """Draw candles with MA-200 and the Ichimoku cloud to a PNG, ADX, Aroon and the Ultimate
    Oscillator under them and the volume profile beside them."""
    from .plot import render_chart

    settings = _settings(args)
    pair = _pairs(args, settings)[0]
    tf = args.timeframe
    if args.profile_bars < 0:
        raise ConfigError(f"--profile-bars must be 0 (no profile) or more bars, got {args.profile_bars}")
    with _market(settings) as market:
        frame = market.indicators(pair, tf, args.bars, args.include_forming, settings.displacement)
        tech = market.technicals(pair, tf, args.bars, args.include_forming)
        profile = market.volume_profile(pair, tf, bars=args.profile_bars) if args.profile_bars else None
    if frame.empty:
        print(f"trading-bot plot: no {tf} bars for {pair} yet", file=sys.stderr)
        return 1
    path = render_chart(frame, args.output, technicals=tech if tech.index.equals(frame.index) else None,
                        profile=profile)  # fmt: skip
    print(f"wrote {path} ({len(frame)} bars of {pair} {tf})")
    return 0


# --- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trading-bot", description="FX trading bot on SQL indicators (MA-200, Ichimoku) from TimescaleDB."
    )
    parser.add_argument("--config", metavar="FILE", help="TOML file adding to the environment's settings")
    parser.add_argument("--database-url", help="overrides DATABASE_URL")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("signals", help="print the latest indicators and signals", description=cmd_signals.__doc__)
    p.add_argument("--pair", action="append", help="pair(s), e.g. EURUSD or EURUSD,GBPUSD (default: TRADING_BOT_PAIRS)")
    p.add_argument("--timeframe", action="append", help=f"timeframe(s): {', '.join(BOT_TIMEFRAMES)}")
    p.add_argument("--limit", type=int, default=20, help="signals to show (default 20)")
    p.set_defaults(func=cmd_signals)

    p = sub.add_parser(
        "run", help="LISTEN candle_closed and evaluate the strategy as bars close",
        description="Run the bot: evaluate the strategy within a second of each bar's close (LISTEN "
        "candle_closed), poll every TRADING_BOT_POLL_INTERVAL_S as a safety net, fall back to IG REST "
        "within the shared budget when the collector is presumed down. Dry run unless "
        "TRADING_BOT_LIVE_ORDERS=true.",
    )  # fmt: skip
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "warmup", help="plan or buy the history MA-200 needs",
        description="Per pair and timeframe: bars stored (streamed, bought or imported), 15m bars composed "
        "for free from 5m, REST points to reach the target, what the shared budget allows now, and when the "
        "stream alone gets there (market hours aware). --apply buys 5m first, composes 15m from them, then "
        "buys only the older 15m still missing: 28 x (200 + 134) = 9,352 points for 28 pairs from nothing.",
    )  # fmt: skip
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--plan", action="store_true", help="show the plan, spend nothing")
    mode.add_argument("--apply", action="store_true", help="buy the missing bars within the budget, 5m first")
    p.add_argument("--pair", action="append", help="pair(s) (default: TRADING_BOT_PAIRS)")
    p.add_argument("--timeframe", action="append", help="15m and/or 5m (default: both)")
    p.add_argument("--target", type=int, help="bars to reach (default TRADING_BOT_WARMUP_TARGET_BARS, 200)")
    p.add_argument(
        "--reserve", type=int, metavar="POINTS",
        help="points left for the collector this run (default TRADING_BOT_REST_RESERVE_POINTS, 2000): a first "
        "warm-up of 28 pairs needs 9,352, so lower it to 500 when nothing else needs REST yet",
    )  # fmt: skip
    p.set_defaults(func=cmd_warmup)

    p = sub.add_parser(
        "plot", help="draw candles, MA-200, the cloud, ADX, Aroon, UltOsc and the volume profile to a PNG",
        description=cmd_plot.__doc__,
    )  # fmt: skip
    p.add_argument("--pair", action="append", required=True, help="the pair, e.g. EURUSD")
    p.add_argument("--timeframe", default="15m", choices=BOT_TIMEFRAMES, help="default 15m")
    p.add_argument("--bars", type=int, default=300, help="bars to draw (default 300)")
    p.add_argument("-o", "--output", default="chart.png", help="PNG file to write (default chart.png)")
    p.add_argument("--include-forming", action="store_true", help="draw the forming bar too")
    p.add_argument("--profile-bars", type=int, default=90, help="complete bars in the volume profile (0: none)")
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"trading-bot {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        import psycopg

        if isinstance(e, psycopg.OperationalError):
            print(f"trading-bot {args.command}: database unreachable: {str(e).strip()}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
