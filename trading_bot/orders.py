"""Orders: nothing is sent unless TRADING_BOT_LIVE_ORDERS=true, and then only within limits.

The default is a dry run: signals are recorded and no broker is even constructed. With live
orders enabled, every signal passes the same checks before trading-ig sends a market order
with a stop: size within TRADING_BOT_MAX_SIZE, fewer open positions than
TRADING_BOT_MAX_OPEN_POSITIONS, and a bar recent enough that the price it was decided on still
means something (a bot restarted hours later must not act on yesterday's cross). Each outcome
is written back to the signal's row, so the table says what happened to every decision.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from collector import logs
from collector import timeframes as tfs

from .config import BotSettings
from .strategy import Signal

log = logging.getLogger(__name__)

OrderStatus = Literal["placed", "rejected", "skipped", "failed"]


class Broker(Protocol):
    """Where orders go; `IGBroker` in production, a fake in tests."""

    def open_positions(self) -> int: ...

    def place(self, signal: Signal, size: float, stop_distance: float, limit_distance: float | None) -> str: ...


@dataclass(frozen=True)
class RiskLimits:
    order_size: float
    max_size: float
    max_open_positions: int
    stop_distance_pips: float
    limit_distance_pips: float | None
    max_signal_age_bars: int  # bars after the signal's bar closed during which it may still trade
    grace_s: float = 60.0  # how late a bar's close may be noticed (collector grace, NOTIFY, query)

    @classmethod
    def from_settings(cls, s: BotSettings) -> RiskLimits:
        return cls(
            order_size=s.order_size,
            max_size=s.max_size,
            max_open_positions=s.max_open_positions,
            stop_distance_pips=s.stop_distance_pips,
            limit_distance_pips=s.limit_distance_pips,
            max_signal_age_bars=s.max_signal_age_bars,
        )


@dataclass(frozen=True)
class OrderOutcome:
    status: OrderStatus
    ref: str | None = None
    note: str | None = None


class OrderExecutor:
    """Turns a newly stored signal into an order, or into the reason it did not become one."""

    def __init__(self, limits: RiskLimits, broker: Broker | None = None, dry_run: bool = True) -> None:
        if not dry_run and broker is None:
            raise ValueError("live orders need a broker")
        self.limits, self.broker, self.dry_run = limits, broker, dry_run

    def execute(self, signal: Signal, now: dt.datetime) -> OrderOutcome | None:
        """None in a dry run (nothing to record); otherwise what happened to the order."""
        if self.dry_run or self.broker is None:
            return None
        lim = self.limits
        if lim.order_size > lim.max_size:
            return OrderOutcome("rejected", note=f"size {lim.order_size} exceeds the maximum {lim.max_size}")
        tf_s = tfs.length_ms(signal.timeframe) / 1000
        closed_at = signal.bucket + dt.timedelta(seconds=tf_s)
        age_s = (now - closed_at).total_seconds()
        if age_s > lim.max_signal_age_bars * tf_s + lim.grace_s:
            return OrderOutcome("skipped", note=f"bar closed {age_s:.0f}s ago; too old to trade on")
        try:
            open_now = self.broker.open_positions()
        except Exception as e:  # broker unreachable: do not trade blind
            return OrderOutcome("failed", note=f"could not read open positions: {logs.redact(str(e))}")
        if open_now >= lim.max_open_positions:
            return OrderOutcome("skipped", note=f"{open_now} open positions; the maximum is {lim.max_open_positions}")
        try:
            ref = self.broker.place(signal, lim.order_size, lim.stop_distance_pips, lim.limit_distance_pips)
        except Exception as e:
            log.error("order failed", extra={"pair": signal.pair, "side": signal.side, "error": logs.redact(str(e))})
            return OrderOutcome("failed", note=logs.redact(str(e))[:500])
        log.warning(
            "order placed",
            extra={"pair": signal.pair, "side": signal.side, "size": lim.order_size, "deal_reference": ref},
        )
        return OrderOutcome("placed", ref=ref)


class IGBroker:
    """Market orders with a stop through trading-ig's REST session (live or demo account).

    Not exercised by the tests against a real account; it is only built when
    TRADING_BOT_LIVE_ORDERS=true.
    """

    def __init__(self, settings: BotSettings) -> None:
        settings.require("ig_username", "ig_password", "ig_api_key")
        self.settings = settings
        self._svc: Any = None
        for secret in (settings.ig_password, settings.ig_api_key):
            if secret is not None:
                logs.register_secret(secret.get_secret_value())

    def _service(self) -> Any:
        if self._svc is None:
            from trading_ig import IGService

            s = self.settings
            assert s.ig_password is not None and s.ig_api_key is not None
            svc = IGService(
                s.ig_username, s.ig_password.get_secret_value(), s.ig_api_key.get_secret_value(),
                acc_type=s.ig_acc_type, acc_number=s.ig_account_id, return_dataframe=False, return_munch=False,
            )  # fmt: skip
            svc.BASE_URL = svc.crud_session.BASE_URL = s.rest_url
            svc.create_session(version=s.ig_api_version)
            self._svc = svc
        return self._svc

    def open_positions(self) -> int:
        body = self._service().fetch_open_positions()
        positions = body.get("positions", []) if isinstance(body, dict) else body
        return len(positions)

    def place(self, signal: Signal, size: float, stop_distance: float, limit_distance: float | None) -> str:
        deal = self._service().create_open_position(
            currency_code=self.settings.currency_code, direction=signal.side.upper(),
            epic=self.settings.epic(signal.pair), expiry="-", force_open=True, guaranteed_stop=False,
            level=None, limit_distance=limit_distance, limit_level=None, order_type="MARKET", quote_id=None,
            size=size, stop_distance=stop_distance, stop_level=None, trailing_stop=False,
            trailing_stop_increment=None,
        )  # fmt: skip
        status = deal.get("dealStatus") if isinstance(deal, dict) else None
        if status and status != "ACCEPTED":
            raise RuntimeError(f"IG rejected the order: {deal.get('reason', status)}")
        return str(deal.get("dealReference") or deal.get("dealId"))
