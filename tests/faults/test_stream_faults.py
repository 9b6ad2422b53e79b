"""Stream faults, repeated and combined: the Lightstreamer connection dropped, the session ended
by the server, credentials refused, tokens expired. After each, the collector streams again,
the buckets the outage overlapped are replaced from REST (`source = 'rest'`), and every complete
candle equals ground truth."""

from __future__ import annotations

import time

import pytest

from collector import timeframes as tfs

from .kit import MIN, wait_for

pytestmark = pytest.mark.timeout(240)


def _bucket(ms: int, tf: str = "5m") -> int:
    return ms - ms % tfs.length_ms(tf)


def test_three_drops_close_abort_close_each_recovered_and_backfilled(scenario) -> None:
    s = scenario(
        "stream dropped 3x (close, abort, close)",
        "WebSocket closed cleanly, reset (TCP abort), closed again; 5-10 simulated minutes apart",
    )
    t0 = s.start()
    drops = []
    for mode in ("close", "abort", "close"):
        s.sleep_until_phase("5m", 1.0, min_wait_min=3)
        sessions = s.sessions()
        drops.append(s.sim.now_ms())
        t_fault = time.monotonic()
        assert s.sim.drop_connections(mode)["dropped"] >= 1
        s.recovered_within(t_fault, sessions, what=f"the {mode} drop")
    s.collect(4)
    s.recovered = "reconnected after each drop; each drop's buckets replaced from REST"
    s.finish(t0)
    s.assert_from_rest(sorted({_bucket(d) for d in drops}))
    (repaired,) = s.sql("SELECT count(*) FROM candle_repairs WHERE resolution = 'rest'")[0]
    assert s.notes["rest_points"] == repaired, "one REST point per repaired candle, none for good candles"
    (composed,) = s.sql("SELECT count(*) FROM candle_repairs WHERE resolution = 'composed' AND timeframe = '15m'")[0]
    assert composed >= 28, "a 15m bucket whose three 5m buckets are complete is composed from them, not bought"
    s.notes["composed"] = int(composed)


def test_server_ends_session_with_retry_and_terminal_codes_in_turn(scenario) -> None:
    """END 48 (the client retries with a new session), END 32 (terminal: the collector logs in
    again), END 48 again: three server-side ends in one run."""
    s = scenario("session ended 48, 32, 48", "server sends END 48, then END 32 (fresh login), then END 48")
    t0 = s.start()
    ends = []
    for code in (48, 32, 48):
        s.sleep_until_phase("5m", 2.0, min_wait_min=3)
        sessions, logins = s.sessions(), s.metric("logins_total", result="ok")
        ends.append(s.sim.now_ms())
        t_fault = time.monotonic()
        assert s.sim.end_sessions(code)["ended"] >= 1
        s.recovered_within(t_fault, sessions, what=f"END {code}")
        if code == 32:
            assert s.metric("logins_total", result="ok") > logins, "END 32 must be followed by a fresh login"
    s.collect(4)
    s.recovered = "new session after 48; fresh login after 32; gaps replaced from REST"
    s.finish(t0)
    s.assert_from_rest(sorted({_bucket(e) for e in ends}))


def test_credentials_refused_over_several_attempts_then_accepted(scenario) -> None:
    """The account's password is refused for three login attempts in a row (backoff between
    them, the process stays up); once accepted, streaming resumes and the whole outage -
    several buckets without any stream - is backfilled from REST."""
    s = scenario(
        "credentials refused, then accepted",
        "tokens expired + END 32 + logins refused 3x, then accepted",
    )
    t0 = s.start()
    s.sleep_until_phase("5m", 1.0, min_wait_min=2)
    refused = s.metric("logins_total", result="refused")
    sessions = s.sessions()
    s.sim.refuse_credentials(True)
    s.sim.expire_tokens()
    out_from = s.sim.now_ms()
    s.sim.end_sessions(32)
    wait_for(lambda: s.metric("logins_total", result="refused") >= refused + 3, 60, "three refused logins")
    assert s.proc.alive()
    assert s.metric("stream_connected") == 0
    assert s.logged("IG login refused") >= 3
    s.sim.refuse_credentials(False)
    t_fault = time.monotonic()
    s.recovered_within(t_fault, sessions, timeout=90, what="accepted credentials")
    out_to = s.sim.now_ms()
    s.collect(4)
    s.recovered = "kept retrying with backoff; streamed after the first accepted login; outage backfilled"
    s.notes["outage_sim_minutes"] = round((out_to - out_from) / MIN, 1)
    s.finish(t0)
    s.assert_from_rest(sorted({_bucket(out_from), *range(_bucket(out_from), out_to, 5 * MIN)}))


def test_expired_tokens_then_a_drop_reconnect_with_a_fresh_login(scenario) -> None:
    """IG expires the CST/XST tokens while the stream flows (as after 12 h); the stream keeps
    going until the connection drops. The Lightstreamer client's own reconnect then presents the
    old tokens and is refused; the collector logs in afresh and streams again. (The stale
    watchdog is set long here so that it is the client's refused reconnect that is handled.)"""
    s = scenario(
        "tokens expired, then drop",
        "expire_tokens(), then the stream connection closed; the client's own reconnect is refused",
        env={"COLLECTOR_STALE_AFTER_S": "3000"},
    )
    t0 = s.start()
    s.sleep_until_phase("5m", 2.0, min_wait_min=2)
    logins = s.metric("logins_total", result="ok")
    s.sim.expire_tokens()
    s.collect(1)
    assert s.metric("stream_connected") == 1, "expired tokens must not stop a flowing stream"
    drop_at, sessions = s.sim.now_ms(), s.sessions()
    t_fault = time.monotonic()
    s.sim.drop_connections("close")
    s.recovered_within(t_fault, sessions, what="the drop with expired tokens")
    assert s.metric("logins_total", result="ok") == logins + 1, "the reconnect must log in afresh, once"
    assert s.metric("stream_reconnects_total", cause="stale") == 0
    assert (
        s.metric("stream_reconnects_total", cause="server_end")
        + s.metric("stream_reconnects_total", cause="server_error")
        == 1
    ), "the refused reconnect of the client is what the collector handled"
    s.collect(4)
    s.recovered = "client's reconnect refused (old tokens); fresh login; gap replaced from REST"
    s.finish(t0)
    s.assert_from_rest([_bucket(drop_at)])
