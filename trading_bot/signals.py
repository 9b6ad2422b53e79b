"""The `signals` table: one row per strategy, pair, timeframe and bar (sql/008_signals.sql).

Saving is idempotent: a bar evaluated twice (a repeated NOTIFY, the safety poll, a restart)
keeps its first row and reports that it was already there, which is what keeps an order from
being sent twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from .strategy import Signal


@dataclass(frozen=True)
class StoredSignal:
    time: dt.datetime
    pair: str
    timeframe: str
    bucket: dt.datetime
    strategy: str
    side: str
    price: float
    indicators: dict[str, Any]
    reason: str
    dry_run: bool
    order_status: str | None
    order_ref: str | None
    order_note: str | None


class SignalStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def save(self, signal: Signal, dry_run: bool) -> bool:
        """Insert the signal; False when this strategy already decided on this bar."""
        with self.pool.connection() as conn:
            row = conn.execute(
                """INSERT INTO signals (pair, timeframe, bucket, strategy, side, price, indicators, reason, dry_run)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (strategy, pair, timeframe, bucket) DO NOTHING
                   RETURNING 1""",
                (
                    signal.pair, signal.timeframe, signal.bucket, signal.strategy, signal.side,
                    signal.price, Jsonb(signal.indicators), signal.reason, dry_run,
                ),
            ).fetchone()  # fmt: skip
        return row is not None

    def set_order(self, signal: Signal, status: str, ref: str | None = None, note: str | None = None) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                """UPDATE signals SET order_status = %s, order_ref = %s, order_note = %s
                   WHERE strategy = %s AND pair = %s AND timeframe = %s AND bucket = %s""",
                (status, ref, note, signal.strategy, signal.pair, signal.timeframe, signal.bucket),
            )

    def latest(
        self, pairs: list[str] | None = None, timeframes: list[str] | None = None, limit: int = 20
    ) -> list[StoredSignal]:
        """Newest signals first, optionally for some pairs and timeframes."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                """SELECT time, pair, timeframe, bucket, strategy, side, price, indicators, reason, dry_run,
                          order_status, order_ref, order_note
                   FROM signals
                   WHERE (%(pairs)s::text[] IS NULL OR pair = ANY(%(pairs)s))
                     AND (%(tfs)s::text[] IS NULL OR timeframe = ANY(%(tfs)s))
                   ORDER BY bucket DESC, pair, timeframe LIMIT %(limit)s""",
                {"pairs": pairs, "tfs": timeframes, "limit": limit},
            ).fetchall()
        return [StoredSignal(*r) for r in rows]
