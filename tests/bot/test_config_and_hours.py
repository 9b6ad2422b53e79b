"""Settings are validated at start with errors naming the setting; market hours as the bot asks."""

from __future__ import annotations

import datetime as dt

import pytest

from collector.config import ConfigError
from trading_bot import market_hours as mh
from trading_bot.config import load_bot_settings

FIVE_MIN, FIFTEEN_MIN = 300_000, 900_000


def at(*args: int) -> int:
    return mh.to_ms(dt.datetime(*args, tzinfo=dt.UTC))


def test_defaults_are_a_dry_run_on_5m_and_15m(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRADING_BOT_LIVE_ORDERS", "TRADING_BOT_TIMEFRAMES", "TRADING_BOT_CONFIG"):
        monkeypatch.delenv(name, raising=False)

    s = load_bot_settings()

    assert s.live_orders is False
    assert s.bot_timeframes == ("5m", "15m")
    assert len(s.bot_pairs) == 28 and s.displacement == 26


def test_every_bad_setting_is_named_as_the_user_writes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_BOT_TIMEFRAMES", "15m,2h")
    monkeypatch.setenv("TRADING_BOT_POLL_INTERVAL_S", "0")
    monkeypatch.setenv("TRADING_BOT_PAIRS", "EURUSD,EURXXX")

    with pytest.raises(ConfigError) as e:
        load_bot_settings()

    text = str(e.value)
    assert "TRADING_BOT_TIMEFRAMES (TOML key bot_timeframes): 2h not served by indicators()" in text
    assert "TRADING_BOT_POLL_INTERVAL_S (TOML key poll_interval_s): Input should be greater than 0" in text
    assert "TRADING_BOT_PAIRS (TOML key bot_pairs): unknown pair 'EURXXX'" in text


def test_live_orders_need_credentials_and_a_size_within_the_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IG_USERNAME", "IG_PASSWORD", "IG_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRADING_BOT_LIVE_ORDERS", "true")
    with pytest.raises(ConfigError, match="TRADING_BOT_LIVE_ORDERS=true needs IG_USERNAME"):
        load_bot_settings()
    monkeypatch.setenv("TRADING_BOT_LIVE_ORDERS", "false")
    monkeypatch.setenv("TRADING_BOT_ORDER_SIZE", "5")
    with pytest.raises(ConfigError, match=r"TRADING_BOT_ORDER_SIZE \(5.0\) exceeds TRADING_BOT_MAX_SIZE \(1.0\)"):
        load_bot_settings()


def test_a_toml_file_adds_settings_and_the_environment_wins(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bot.toml"
    path.write_text('bot_pairs = ["EURUSD", "USDJPY"]\npoll_interval_s = 5\n')
    monkeypatch.setenv("TRADING_BOT_POLL_INTERVAL_S", "7")

    s = load_bot_settings(path)

    assert s.bot_pairs == ("EURUSD", "USDJPY") and s.poll_interval_s == 7


def test_at_a_weekend_the_newest_closed_bar_is_the_last_before_fridays_close() -> None:
    saturday = at(2025, 1, 11, 12, 0)

    assert mh.from_ms(mh.last_closed_bucket(saturday, FIVE_MIN)) == dt.datetime(2025, 1, 10, 21, 55, tzinfo=dt.UTC)


def test_during_the_week_the_newest_closed_bar_is_one_bar_back_after_the_grace() -> None:
    wednesday = at(2025, 1, 8, 12, 2)

    assert mh.from_ms(mh.last_closed_bucket(wednesday, FIVE_MIN)).time() == dt.time(11, 55)
    assert mh.from_ms(mh.last_closed_bucket(wednesday, FIVE_MIN, grace_ms=180_000)).time() == dt.time(11, 50)


def test_the_stream_needs_market_time_not_calendar_time() -> None:
    friday_noon = at(2025, 1, 10, 12, 0)  # 40 bars of 15m before the 22:00 UTC close (winter)

    eta = mh.from_ms(mh.bars_reached_at(friday_noon, 200, FIFTEEN_MIN))

    assert eta == dt.datetime(2025, 1, 14, 14, 0, tzinfo=dt.UTC)  # Sunday 22:00 + 160 bars


def test_in_summer_the_market_opens_an_hour_earlier_in_utc() -> None:
    saturday = at(2025, 7, 12, 12, 0)

    assert mh.from_ms(mh.bars_reached_at(saturday, 1, FIVE_MIN)) == dt.datetime(2025, 7, 13, 21, 5, tzinfo=dt.UTC)
