"""Leadership: the lease in PostgreSQL (sql/012_leadership.sql), its fence, and the decision rule
that makes a leader give up before the database would let another take over.

The SQL tests use leases of a fraction of a second so expiry is real, not simulated."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from collector.leadership import (
    FENCED_SQLSTATE,
    Instance,
    LeaderState,
    Lease,
    LeaseTiming,
    NotLeader,
    Role,
    dead_predecessor,
    fence,
    is_fenced,
)

SHORT = 0.3  # seconds: a lease that lapses within a test


@pytest.fixture
def lease_db(db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The session database with the lease never held and no history (conftest's `db` only
    empties the market tables)."""
    db.execute("TRUNCATE leader_history, flush_log")
    db.execute(
        "UPDATE collector_leader SET epoch = 0, holder = NULL, since = NULL, expires_at = NULL, renewed_at = NULL, "
        "barred_holder = NULL, barred_until = NULL, instance = NULL"
    )
    yield db


def _acquire(conn: psycopg.Connection, holder: str, lease_s: float = 5.0) -> int | None:
    return conn.execute("SELECT leader_acquire(%s, %s)", (holder, lease_s)).fetchone()[0]


def _renew(conn: psycopg.Connection, epoch: int, lease_s: float = 5.0) -> bool:
    return conn.execute("SELECT leader_renew(%s, %s)", (epoch, lease_s)).fetchone()[0]


def _history(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT epoch, holder, end_reason FROM leader_history ORDER BY epoch").fetchall()


def _fence_error(conn: psycopg.Connection, epoch: int) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as err:
        conn.execute("SELECT leader_fence(%s)", (epoch,))
    return err.value


# --- the lease in SQL ------------------------------------------------------------------------


def test_acquire_when_free_returns_epoch_one(lease_db: psycopg.Connection) -> None:
    assert _acquire(lease_db, "host-a") == 1
    assert lease_db.execute("SELECT holder, epoch, alive FROM collector_leadership").fetchone() == ("host-a", 1, True)


def test_second_holder_is_refused_while_the_lease_is_live(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a")
    assert _acquire(lease_db, "host-b") is None
    assert lease_db.execute("SELECT holder, epoch FROM collector_leader").fetchone() == ("host-a", 1)


def test_same_holder_name_is_refused_while_its_lease_is_live(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a")
    assert _acquire(lease_db, "host-a") is None


def _acquire_as(conn: psycopg.Connection, holder: str, instance: str | None, dead: str | None = None) -> int | None:
    return conn.execute("SELECT leader_acquire(%s, 5, %s, %s)", (holder, instance, dead)).fetchone()[0]


def test_same_holder_reclaims_a_live_lease_whose_process_it_names_dead(lease_db: psycopg.Connection) -> None:
    _acquire_as(lease_db, "host-a", "boot/ns/100")
    assert _acquire_as(lease_db, "host-a", "boot/ns/200", dead="boot/ns/100") == 2
    assert lease_db.execute("SELECT holder, instance, alive FROM collector_leadership").fetchone() == (
        "host-a",
        "boot/ns/200",
        True,
    )
    assert _history(lease_db) == [(1, "host-a", "restarted"), (2, "host-a", None)]


def test_a_reclaim_naming_another_process_than_the_holders_is_refused(lease_db: psycopg.Connection) -> None:
    _acquire_as(lease_db, "host-a", "boot/ns/100")
    assert _acquire_as(lease_db, "host-a", "boot/ns/200", dead="boot/ns/99") is None


def test_another_holder_cannot_reclaim_a_live_lease_by_naming_its_process(lease_db: psycopg.Connection) -> None:
    _acquire_as(lease_db, "host-a", "boot/ns/100")
    assert _acquire_as(lease_db, "host-b", "boot/ns/200", dead="boot/ns/100") is None
    assert lease_db.execute("SELECT holder, epoch FROM collector_leader").fetchone() == ("host-a", 1)


def test_takeover_after_expiry_bumps_the_epoch(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", SHORT)
    time.sleep(SHORT + 0.05)
    assert lease_db.execute("SELECT alive FROM collector_leadership").fetchone() == (False,)
    assert _acquire(lease_db, "host-b") == 2
    assert lease_db.execute("SELECT holder, epoch FROM collector_leader").fetchone() == ("host-b", 2)


def test_renew_extends_a_live_lease(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", SHORT)
    assert _renew(lease_db, 1, 5.0) is True
    time.sleep(SHORT + 0.05)
    assert _acquire(lease_db, "host-b") is None


def test_renew_is_refused_after_takeover(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", SHORT)
    time.sleep(SHORT + 0.05)
    _acquire(lease_db, "host-b")
    assert _renew(lease_db, 1) is False
    assert lease_db.execute("SELECT holder, epoch FROM collector_leader").fetchone() == ("host-b", 2)


def test_renew_extends_a_lapsed_lease_nobody_took(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", SHORT)
    time.sleep(SHORT + 0.05)
    assert _renew(lease_db, 1) is True
    assert lease_db.execute("SELECT epoch, alive FROM collector_leadership").fetchone() == (1, True)


def test_renew_is_refused_after_the_holder_released(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", 60.0)
    lease_db.execute("SELECT leader_release(1)")
    assert _renew(lease_db, 1) is False


def test_a_refused_acquire_records_its_caller_as_a_standby(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", 60.0)
    assert _acquire(lease_db, "host-b") is None
    assert lease_db.execute("SELECT leader_standbys('host-a', 10)").fetchone() == (1,)
    assert lease_db.execute("SELECT leader_standbys('host-b', 10)").fetchone() == (0,)


def test_release_lets_another_acquire_at_once(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", 60.0)
    assert lease_db.execute("SELECT leader_release(1)").fetchone() == (True,)
    assert _acquire(lease_db, "host-b") == 2


def test_release_of_a_stale_epoch_changes_nothing(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", SHORT)
    time.sleep(SHORT + 0.05)
    _acquire(lease_db, "host-b")
    assert lease_db.execute("SELECT leader_release(1)").fetchone() == (False,)
    assert lease_db.execute("SELECT holder, epoch, alive FROM collector_leadership").fetchone() == ("host-b", 2, True)


def test_history_records_each_epoch_and_why_it_ended(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", SHORT)
    time.sleep(SHORT + 0.05)
    _acquire(lease_db, "host-b", SHORT)  # a lapsed, b took over
    time.sleep(SHORT + 0.05)
    _acquire(lease_db, "host-b", 60.0)  # b lapsed (frozen, say) and came back
    lease_db.execute("SELECT leader_release(3)")
    assert _history(lease_db) == [
        (1, "host-a", "taken_over"),
        (2, "host-b", "expired"),
        (3, "host-b", "stepped_down"),
    ]


def test_history_of_a_lapsed_epoch_ends_when_its_lease_expired(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", SHORT)
    expired_at = lease_db.execute("SELECT expires_at FROM collector_leader").fetchone()[0]
    time.sleep(SHORT + 0.05)
    _acquire(lease_db, "host-b")
    assert lease_db.execute("SELECT until FROM leader_history WHERE epoch = 1").fetchone() == (expired_at,)
    assert lease_db.execute("SELECT until, end_reason FROM leader_history WHERE epoch = 2").fetchone() == (None, None)


def test_acquire_rejects_a_non_positive_lease(lease_db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        _acquire(lease_db, "host-a", 0.0)


# --- the fence -------------------------------------------------------------------------------


def test_fence_passes_for_the_current_live_epoch(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a")
    fence(lease_db, 1)  # no exception: the write may go ahead


def test_fence_refuses_a_stale_epoch_with_its_own_sqlstate(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", SHORT)
    time.sleep(SHORT + 0.05)
    _acquire(lease_db, "host-b")
    err = _fence_error(lease_db, 1)
    assert err.sqlstate == FENCED_SQLSTATE == "IGL01"
    assert is_fenced(err)


def test_fence_accepts_an_expired_lease_nobody_took(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", SHORT)
    time.sleep(SHORT + 0.05)
    lease_db.execute("SELECT leader_fence(1)")


def test_fence_refuses_a_released_epoch(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", 60.0)
    lease_db.execute("SELECT leader_release(1)")
    assert _fence_error(lease_db, 1).sqlstate == "IGL01"


def test_fence_refuses_before_anyone_ever_led(lease_db: psycopg.Connection) -> None:
    assert _fence_error(lease_db, 0).sqlstate == "IGL01"


def test_fence_aborts_the_write_transaction(lease_db: psycopg.Connection, db_url: str) -> None:
    _acquire(lease_db, "host-a", SHORT)
    time.sleep(SHORT + 0.05)
    _acquire(lease_db, "host-b")
    with psycopg.connect(db_url) as w:
        with pytest.raises(psycopg.Error) as err, w.transaction():
            fence(w, 1)
            w.execute("INSERT INTO flush_log (epoch) VALUES (1)")
        assert is_fenced(err.value)
    assert lease_db.execute("SELECT count(*) FROM flush_log").fetchone() == (0,)


def test_takeover_waits_for_an_open_fenced_write_then_the_stale_writer_is_refused(
    lease_db: psycopg.Connection, db_url: str
) -> None:
    _acquire(lease_db, "host-a", SHORT)
    result: dict[str, int | None] = {}
    with psycopg.connect(db_url) as writer, psycopg.connect(db_url, autocommit=True) as standby:
        standby_pid = standby.info.backend_pid
        writer.execute("SELECT leader_flush(1, ARRAY['EURUSD'], now(), now())")  # opens the transaction
        time.sleep(SHORT + 0.05)  # the lease lapses while the write is still open

        taker = threading.Thread(target=lambda: result.setdefault("epoch", _acquire(standby, "host-b")))
        taker.start()
        deadline = time.monotonic() + 5
        waiting = None
        while time.monotonic() < deadline and waiting is None:
            waiting = lease_db.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                (standby_pid,),
            ).fetchone()
            time.sleep(0.02)
        assert waiting == ("Lock",)
        assert taker.is_alive()
        writer.commit()  # the fenced write commits: it began before the takeover
        taker.join(5)
        assert result == {"epoch": 2}

        with pytest.raises(psycopg.Error) as err:
            writer.execute("SELECT leader_fence(1)")
        assert err.value.sqlstate == "IGL01"
        writer.rollback()
    assert lease_db.execute("SELECT epoch, pairs FROM flush_log").fetchall() == [(1, ["EURUSD"])]
    assert lease_db.execute("SELECT count(*) FROM leader_overlaps").fetchone() == (0,)


def test_renew_does_not_wait_for_an_open_fenced_write(lease_db: psycopg.Connection, db_url: str) -> None:
    _acquire(lease_db, "host-a", 5.0)
    with psycopg.connect(db_url) as writer, psycopg.connect(db_url, autocommit=True) as leaser:
        fence(writer, 1)
        leaser.execute("SET lock_timeout = '200ms'")
        assert _renew(leaser, 1) is True
        writer.rollback()


def _forget_the_last_acquire(conn: psycopg.Connection) -> None:
    """What a promoted asynchronous replica may show: the lease as it was before the last acquire."""
    conn.execute("TRUNCATE leader_history")
    conn.execute("UPDATE collector_leader SET epoch = 0, holder = NULL, since = NULL, expires_at = NULL")


def test_fence_refuses_the_same_epoch_number_held_by_another_holder(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a")
    _forget_the_last_acquire(lease_db)
    assert _acquire(lease_db, "host-b") == 1
    with pytest.raises(psycopg.Error) as err:
        fence(lease_db, 1, "host-a")
    assert err.value.sqlstate == "IGL01"
    fence(lease_db, 1, "host-b")


def test_lease_whose_epoch_number_was_reissued_after_failover_is_lost(
    lease_db: psycopg.Connection, db_url: str
) -> None:
    with Lease(db_url, node_name="host-a", lease_s=5.0) as a, psycopg.connect(db_url) as w:
        assert a.try_acquire() == 1
        _forget_the_last_acquire(lease_db)
        assert _acquire(lease_db, "host-b") == 1
        assert a.renew() is False
        assert a.role is Role.LOST
        with pytest.raises(NotLeader):
            a.fence(w)


def test_lease_fences_another_connections_write(lease_db: psycopg.Connection, db_url: str) -> None:
    with Lease(db_url, node_name="host-a", lease_s=5.0) as a, psycopg.connect(db_url) as w:
        a.try_acquire()
        with w.transaction():
            assert a.fence(w) == 1
            w.execute("INSERT INTO flush_log (epoch) VALUES (1)")
    assert lease_db.execute("SELECT epoch FROM flush_log").fetchall() == [(1,)]


# --- which epoch wrote each row --------------------------------------------------------------


def _insert_candle(conn: psycopg.Connection, pair: str, bucket: str) -> None:
    conn.execute(
        "INSERT INTO candles (pair, timeframe, bucket, bid_open, bid_high, bid_low, bid_close, "
        "ask_open, ask_high, ask_low, ask_close, ticks) VALUES (%s, '1m', %s, 1, 1, 1, 1, 1, 1, 1, 1, 1)",
        (pair, bucket),
    )


def test_flush_log_names_the_epoch_that_wrote_each_candle(lease_db: psycopg.Connection, db_url: str) -> None:
    _acquire(lease_db, "host-a", SHORT)
    with psycopg.connect(db_url) as w, w.transaction():
        w.execute("SELECT leader_flush(1, ARRAY['EURUSD'], '2026-01-05 10:00Z', '2026-01-05 10:00Z')")
        _insert_candle(w, "EURUSD", "2026-01-05 10:00Z")
    time.sleep(SHORT + 0.05)
    _acquire(lease_db, "host-b")
    with psycopg.connect(db_url) as w, w.transaction():
        w.execute("SELECT leader_flush(2, ARRAY['GBPUSD'], '2026-01-05 10:01Z', '2026-01-05 10:01Z')")
        _insert_candle(w, "GBPUSD", "2026-01-05 10:01Z")
    _insert_candle(lease_db, "USDJPY", "2026-01-05 10:02Z")  # written without the fence
    assert lease_db.execute("SELECT pair, epoch FROM candle_writers ORDER BY bucket").fetchall() == [
        ("EURUSD", 1),
        ("GBPUSD", 2),
        ("USDJPY", None),
    ]


def test_a_candle_written_inside_a_savepoint_is_still_attributed(lease_db: psycopg.Connection, db_url: str) -> None:
    _acquire(lease_db, "host-a")
    with psycopg.connect(db_url) as w, w.transaction():
        w.execute("SELECT leader_flush(1, ARRAY['EURUSD'], NULL, NULL, 'host-a')")
        with w.transaction():  # a savepoint: the row's xmin is the subtransaction's id
            _insert_candle(w, "EURUSD", "2026-01-05 10:00Z")
    assert lease_db.execute("SELECT pair, epoch, holder FROM candle_writers").fetchall() == [("EURUSD", 1, "host-a")]


def test_leader_overlaps_shows_a_write_logged_after_the_next_epoch_began(lease_db: psycopg.Connection) -> None:
    _acquire(lease_db, "host-a", SHORT)
    time.sleep(SHORT + 0.05)
    _acquire(lease_db, "host-b")
    since_2 = lease_db.execute("SELECT since FROM leader_history WHERE epoch = 2").fetchone()[0]
    lease_db.execute("INSERT INTO flush_log (epoch, logged_at) VALUES (1, %s)", (since_2,))  # what fencing prevents
    assert lease_db.execute("SELECT epoch, next_epoch FROM leader_overlaps").fetchall() == [(1, 2)]


def test_the_collector_role_can_lead_fence_and_log(lease_db: psycopg.Connection, db_url: str) -> None:
    with psycopg.connect(db_url) as w:
        w.execute("SET ROLE collector")
        assert w.execute("SELECT leader_acquire('host-a', 5)").fetchone() == (1,)
        assert w.execute("SELECT leader_renew(1, 5, 'host-a')").fetchone() == (True,)
        w.execute("SELECT leader_flush(1, ARRAY['EURUSD'], NULL, NULL, 'host-a')")
        assert w.execute("SELECT holder, alive FROM collector_leadership").fetchone() == ("host-a", True)
        assert w.execute("SELECT leader_release(1, 'host-a')").fetchone() == (True,)
        w.commit()


def test_grafana_reads_who_leads(lease_db: psycopg.Connection, db_url: str) -> None:
    _acquire(lease_db, "host-a")
    with psycopg.connect(db_url) as r:
        r.execute("SET ROLE grafana_reader")
        assert r.execute("SELECT holder, epoch, alive FROM collector_leadership").fetchone() == ("host-a", 1, True)


def test_flush_twice_in_one_transaction_widens_one_log_row(lease_db: psycopg.Connection, db_url: str) -> None:
    _acquire(lease_db, "host-a")
    with psycopg.connect(db_url) as w, w.transaction():
        w.execute("SELECT leader_flush(1, ARRAY['GBPUSD'], '2026-01-05 10:01Z', '2026-01-05 10:02Z')")
        w.execute("SELECT leader_flush(1, ARRAY['EURUSD'], '2026-01-05 10:00Z', '2026-01-05 10:01Z')")
    assert lease_db.execute("SELECT epoch, pairs, from_time::text, to_time::text FROM flush_log").fetchall() == [
        (1, ["EURUSD", "GBPUSD"], "2026-01-05 10:00:00+00", "2026-01-05 10:02:00+00")
    ]


# --- the Lease class on its own connection ---------------------------------------------------


def test_lease_acquires_leads_and_renews(lease_db: psycopg.Connection, db_url: str) -> None:
    with Lease(db_url, node_name="host-a", lease_s=5.0) as a, Lease(db_url, node_name="host-b", lease_s=5.0) as b:
        assert (a.try_acquire(), a.leads, a.epoch) == (1, True, 1)
        assert (b.try_acquire(), b.leads, b.epoch) == (None, False, None)
        assert a.renew() is True
        assert a.require() == 1
        with pytest.raises(NotLeader):
            b.require()


def test_lease_step_down_hands_over_at_once(lease_db: psycopg.Connection, db_url: str) -> None:
    with Lease(db_url, node_name="host-a", lease_s=5.0) as a, Lease(db_url, node_name="host-b", lease_s=5.0) as b:
        a.try_acquire()
        assert a.release() is True
        assert (a.leads, a.role) == (False, Role.STANDBY)
        assert b.try_acquire() == 2
        assert a.renew() is False


def test_lease_that_lost_the_race_reports_lost_on_renew(lease_db: psycopg.Connection, db_url: str) -> None:
    with Lease(db_url, node_name="host-a", lease_s=SHORT) as a:
        a.try_acquire()
        time.sleep(SHORT + 0.05)
        _acquire(lease_db, "host-b")
        assert a.renew() is False
        assert a.role is Role.LOST
        assert a.try_acquire() is None  # host-b holds it


def test_lease_survives_its_connection_being_killed(lease_db: psycopg.Connection, db_url: str) -> None:
    with Lease(db_url, node_name="host-a", lease_s=5.0) as a:
        a.try_acquire()
        lease_db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'ig-collector lease host-a'"
        )
        assert a.renew() is False  # unanswered: the connection was cut
        assert a.leads is True  # still inside its trusted window
        assert a.renew() is True  # reconnected


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: no such process any more
    return child.pid


def test_lease_restarted_on_its_host_takes_back_the_lease_of_its_dead_predecessor(
    lease_db: psycopg.Connection, db_url: str
) -> None:
    me = Instance.current()
    assert me is not None
    dead = str(Instance(me.boot_id, me.pid_ns, _dead_pid()))
    _acquire_as(lease_db, "host-a", dead)
    with Lease(db_url, node_name="host-a", lease_s=5.0) as a:
        assert a.try_acquire() == 2
    assert _history(lease_db)[0] == (1, "host-a", "restarted")


def test_lease_waits_while_the_process_holding_its_name_is_alive(lease_db: psycopg.Connection, db_url: str) -> None:
    me = Instance.current()
    assert me is not None
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            _acquire_as(lease_db, "host-a", str(Instance(me.boot_id, me.pid_ns, other.pid)))
            with Lease(db_url, node_name="host-a", lease_s=5.0) as a:
                assert a.try_acquire() is None
        finally:
            other.kill()


# --- the decision rule, no database ----------------------------------------------------------


ME = Instance("boot-1", "pid:[4026531836]", 500)


def test_instance_round_trips_through_its_text() -> None:
    assert Instance.parse(str(ME)) == ME


def test_instance_parse_refuses_what_it_did_not_write() -> None:
    assert [Instance.parse(t) for t in (None, "", "host-a", "boot/ns/pid", "/ns/1")] == [None] * 5


def test_a_dead_process_of_the_same_boot_and_namespace_is_a_dead_predecessor() -> None:
    assert dead_predecessor("boot-1/pid:[4026531836]/400", ME, alive=lambda pid: False) == "boot-1/pid:[4026531836]/400"


def test_a_live_process_is_not_a_dead_predecessor() -> None:
    assert dead_predecessor("boot-1/pid:[4026531836]/400", ME, alive=lambda pid: True) is None


def test_this_very_process_re_executed_is_not_its_own_dead_predecessor() -> None:
    assert dead_predecessor(str(ME), ME, alive=lambda pid: False) is None


def test_another_boot_or_namespace_is_never_judged_dead() -> None:
    others = ("boot-0/pid:[4026531836]/400", "boot-1/pid:[4026532000]/400")
    assert [dead_predecessor(o, ME, alive=lambda pid: False) for o in others] == [None, None]


def test_nothing_is_reclaimed_where_the_kernel_names_no_instance() -> None:
    assert dead_predecessor("boot-1/pid:[4026531836]/400", None, alive=lambda pid: False) is None


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_timing_renews_every_third_and_trusts_lease_minus_a_fifth() -> None:
    t = LeaseTiming(lease_s=10.0)
    assert (t.renew_every_s, t.margin, t.trusted_s, t.poll_every_s) == (10 / 3, 2.0, 8.0, 1.0)


def test_timing_refuses_a_margin_that_leaves_no_renewal() -> None:
    with pytest.raises(ValueError):
        LeaseTiming(lease_s=9.0, margin_s=6.0)


def test_state_leads_after_acquire_and_stands_by_when_refused() -> None:
    s = LeaderState(LeaseTiming(lease_s=10.0))
    assert s.acquired(None, 0.0) is Role.STANDBY
    assert s.acquired(7, 1.0) is Role.LEAD
    assert (s.epoch, s.trusted_until) == (7, 9.0)


def test_state_gives_up_before_the_database_could_expire_the_lease() -> None:
    s = LeaderState(LeaseTiming(lease_s=10.0))
    s.acquired(1, 100.0, standbys=1)  # the database's expiry is at least 100 + 10 on a clock of the same rate
    assert s.tick(107.999) is Role.LEAD
    assert s.tick(108.0) is Role.LOST


def test_state_counts_trust_from_when_the_renew_was_sent_not_answered() -> None:
    s = LeaderState(LeaseTiming(lease_s=10.0))
    s.acquired(1, 100.0, standbys=1)
    s.renewed(True, 103.0, standbys=1)  # answered at 107, say: trust still ends at 103 + 8
    assert s.trusted_until == 111.0
    assert s.tick(111.0) is Role.LOST


def test_state_unanswered_renewals_keep_leading_until_the_trust_runs_out() -> None:
    s = LeaderState(LeaseTiming(lease_s=10.0))
    s.acquired(1, 100.0, standbys=1)
    assert s.unanswered(103.4) is Role.LEAD
    assert s.unanswered(106.7) is Role.LEAD
    assert s.unanswered(108.0) is Role.LOST


def test_state_with_no_standby_keeps_leading_while_the_database_is_away() -> None:
    s = LeaderState(LeaseTiming(lease_s=10.0))
    s.acquired(1, 100.0, standbys=0)
    assert s.unanswered(130.0) is Role.LEAD
    assert s.renewed(True, 160.0) is Role.LEAD


def test_state_with_no_standby_is_lost_when_the_database_refuses_the_renewal() -> None:
    s = LeaderState(LeaseTiming(lease_s=10.0))
    s.acquired(1, 100.0, standbys=0)
    assert s.renewed(False, 130.0) is Role.LOST


def test_state_refused_renewal_is_lost_at_once() -> None:
    s = LeaderState(LeaseTiming(lease_s=10.0))
    s.acquired(1, 100.0)
    assert s.renewed(False, 101.0) is Role.LOST


def test_state_resumed_after_a_freeze_is_lost_before_its_first_renewal() -> None:
    s = LeaderState(LeaseTiming(lease_s=10.0))
    s.acquired(1, 100.0, standbys=1)
    # SIGSTOP at 101, SIGCONT at 130: the monotonic clock ran on while frozen.
    assert s.leads(130.0) is False
    assert s.renewed(True, 130.0) is Role.LOST


def test_state_renewal_sent_after_the_trust_ended_does_not_revive_it() -> None:
    s = LeaderState(LeaseTiming(lease_s=10.0))
    s.acquired(1, 100.0, standbys=1)
    assert s.renewed(True, 108.5) is Role.LOST


def test_state_lost_stays_lost_until_it_stands_down_and_acquires_again() -> None:
    s = LeaderState(LeaseTiming(lease_s=10.0))
    s.acquired(1, 100.0)
    s.renewed(False, 101.0)
    assert s.renewed(True, 102.0) is Role.LOST
    assert s.stood_down() is Role.STANDBY
    assert s.acquired(2, 103.0) is Role.LEAD
    assert s.epoch == 2


def test_state_renews_every_third_of_the_lease_and_polls_every_second_standing_by() -> None:
    s = LeaderState(LeaseTiming(lease_s=10.0))
    assert s.due(0.0) is True
    s.acquired(None, 0.0)
    assert (s.due(0.99), s.due(1.0)) == (False, True)
    s.acquired(1, 1.0)
    assert (s.due(4.3), s.due(1.0 + 10 / 3)) == (False, True)


def test_lease_leads_property_follows_the_monotonic_clock(lease_db: psycopg.Connection, db_url: str) -> None:
    clock = Clock()
    with Lease(db_url, node_name="host-a", lease_s=10.0, clock=clock) as a:
        assert a.try_acquire() == 1
        with Lease(db_url, node_name="host-b", lease_s=10.0) as b:
            assert b.try_acquire() is None  # a standby: host-a must yield when its trust runs out
        assert a.renew() is True
        clock.t += 7.9
        assert a.leads is True
        clock.t += 0.1
        assert (a.leads, a.epoch, a.role) == (False, None, Role.LOST)


def test_is_fenced_reads_the_sqlstate_through_exception_chains(lease_db: psycopg.Connection) -> None:
    try:
        try:
            fence(lease_db, 1)
        except psycopg.Error as inner:
            raise RuntimeError("flush failed") from inner
    except RuntimeError as outer:
        assert is_fenced(outer) is True
    assert is_fenced(NotLeader("standby")) is True
    assert is_fenced(psycopg.errors.UniqueViolation("duplicate")) is False


def test_a_holder_that_stepped_down_cannot_acquire_during_its_bar(lease_db: psycopg.Connection) -> None:
    assert _acquire(lease_db, "host-a") == 1
    assert lease_db.execute("SELECT leader_release(1, 'host-a', 60)").fetchone() == (True,)
    assert _acquire(lease_db, "host-a") is None


def test_another_holder_acquires_at_once_after_a_step_down(lease_db: psycopg.Connection) -> None:
    assert _acquire(lease_db, "host-a") == 1
    lease_db.execute("SELECT leader_release(1, 'host-a', 60)")
    assert _acquire(lease_db, "host-b") == 2


def test_a_stepped_down_holder_acquires_again_once_its_bar_lapses(lease_db: psycopg.Connection) -> None:
    assert _acquire(lease_db, "host-a") == 1
    lease_db.execute("SELECT leader_release(1, 'host-a', 0.2)")
    time.sleep(0.3)
    assert _acquire(lease_db, "host-a") == 2


def test_lease_release_bars_its_holder_for_two_leases(lease_db: psycopg.Connection, db_url: str) -> None:
    with Lease(db_url, node_name="host-a", lease_s=5.0) as a:
        a.try_acquire()
        a.release()
        bar = lease_db.execute(
            "SELECT barred_holder, round(extract(epoch FROM barred_until - expires_at)) FROM collector_leader"
        ).fetchone()
    assert bar == ("host-a", 10)


def test_a_release_without_bar_lets_its_holder_lead_again_at_once(lease_db: psycopg.Connection, db_url: str) -> None:
    with Lease(db_url, node_name="host-a", lease_s=5.0) as a:
        a.try_acquire()
        a.release(bar_s=0)
        assert a.try_acquire() == 2


def test_a_fenced_transaction_left_idle_is_ended_so_a_takeover_is_not_blocked(
    lease_db: psycopg.Connection, db_url: str
) -> None:
    """A leader frozen (SIGSTOP) inside its write transaction keeps its TCP connection, so only
    the server can release the row lock the takeover waits for."""
    _acquire(lease_db, "host-a", SHORT)
    frozen = psycopg.connect(db_url)
    try:
        frozen.execute("SELECT leader_fence(1)")  # a transaction opened, then the process froze
        time.sleep(2.5)
        assert _acquire(lease_db, "host-b") == 2
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            frozen.execute("SELECT 1")
    finally:
        frozen.close()
