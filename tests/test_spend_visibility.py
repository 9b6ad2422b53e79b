"""Spend visibility: points spent this allowance period, by purpose and by every spender, and
what remains, as `ig-collector status` prints it and as a metric."""

from __future__ import annotations

import datetime as dt

import psycopg
from prometheus_client import generate_latest

from collector.metrics import Metrics
from collector.status import period_spend

NOW = dt.datetime.now(dt.UTC)


def spend(db: psycopg.Connection, spender: str, purpose: str, points: int, ago: dt.timedelta) -> None:
    db.execute(
        "INSERT INTO rest_spend (time, spender, points, purpose) VALUES (%s, %s, %s, %s)",
        (NOW - ago, spender, points, purpose),
    )


def test_the_period_counts_every_spender_by_purpose_since_the_allowance_began(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO rest_allowance (remaining, total, expires_at, updated_by) VALUES (8600, 10000, %s, 'test')",
        (NOW + dt.timedelta(days=2),),
    )
    spend(db, "collector", "repair", 56, dt.timedelta(hours=1))
    spend(db, "backfill", "gap", 300, dt.timedelta(days=1))
    spend(db, "trading_bot", "warmup", 1000, dt.timedelta(days=4))
    spend(db, "trading_bot", "freshness", 44, dt.timedelta(hours=2))
    spend(db, "trading_bot", "warmup", 9000, dt.timedelta(days=6))  # before this period began (5 days ago)

    got = period_spend(db, NOW)
    assert got.by_purpose == {"repair": 56, "backfill": 300, "warmup": 1000, "bot_fallback": 44, "other": 0}
    assert (got.remaining, got.total, got.since) == (8600, 10000, NOW + dt.timedelta(days=2) - dt.timedelta(days=7))


def test_after_the_reset_the_period_starts_again_at_the_full_allowance(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO rest_allowance (remaining, total, expires_at, updated_by) VALUES (12, 10000, %s, 'test')",
        (NOW - dt.timedelta(hours=3),),
    )
    spend(db, "collector", "repair", 28, dt.timedelta(hours=1))
    spend(db, "collector", "repair", 900, dt.timedelta(hours=5))
    got = period_spend(db, NOW)
    assert (got.by_purpose["repair"], got.remaining, got.resets) == (28, 10000, None)


def test_the_metric_shows_the_period_spend_read_from_the_database(db: psycopg.Connection, db_url: str) -> None:
    spend(db, "trading_bot", "warmup", 9352, dt.timedelta(hours=1))
    m = Metrics()
    m.track_period_spend(db_url)
    text = generate_latest(m.registry).decode()
    assert 'ig_collector_rest_points_period{purpose="warmup"} 9352.0' in text
    assert 'ig_collector_rest_points_period{purpose="repair"} 0.0' in text


def test_status_prints_points_by_purpose_and_what_remains(db: psycopg.Connection, db_url: str, capsys) -> None:
    from collector.cli import main

    db.execute(
        "INSERT INTO rest_allowance (remaining, total, expires_at, updated_by) VALUES (9944, 10000, %s, 'test')",
        (NOW + dt.timedelta(days=6),),
    )
    spend(db, "collector", "repair", 56, dt.timedelta(hours=1))
    main(["status", "--database-url", db_url, "--metrics-url", "http://127.0.0.1:9/metrics"])
    out = " ".join(capsys.readouterr().out.split())
    assert "56 spent (repair 56, backfill 0, warm-up 0, bot fallback 0, other 0); 9944 remain" in out
