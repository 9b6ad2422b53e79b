"""`ig-collector step-down`: move leadership by hand. The lease of this node (or `--node`) ends
now; the running leader finds its next renewal refused and re-executes as a standby, and the
node is barred from leading again for two leases so another collector takes over."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import psycopg

from .config import load_settings
from .leadership import STEP_DOWN_BAR_LEASES

HELP = "release the collector lease held by this node, so a standby takes over"
LEASE_APP = "ig-collector lease "  # the lease connection's application_name prefix (collector.leadership)

_RELEASE = """SELECT epoch, leader_release(epoch, holder, %s)
  FROM collector_leader WHERE holder = %s AND expires_at > clock_timestamp()"""
_STANDBYS = """SELECT DISTINCT substr(application_name, length(%s) + 1) FROM pg_stat_activity
 WHERE application_name LIKE %s || '%%' AND substr(application_name, length(%s) + 1) <> %s ORDER BY 1"""
_LEADER = "SELECT holder, epoch, since, expires_at, alive FROM collector_leadership"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", help="the node that should stop leading (default: COLLECTOR_NODE_NAME, else the host)")
    p.add_argument("--database-url", help="overrides DATABASE_URL")


def leader_line(conn: psycopg.Connection, now: dt.datetime) -> str:
    """Who leads, for `ig-collector status`: from the collector_leadership view."""
    row = conn.execute(_LEADER).fetchone()
    if row is None or not row[4]:
        return "no leader"
    holder, epoch, since, expires, _alive = row
    left = max(0.0, (expires - now).total_seconds())
    return f"leader: {holder} (epoch {epoch}) since {since:%Y-%m-%d %H:%M:%S} UTC, lease expires in {left:.0f} s"


def step_down(conn: psycopg.Connection, node: str, lease_s: float) -> tuple[int, list[str]] | None:
    """The epoch released and the standbys connected now; None when `node` does not lead."""
    row = conn.execute(_RELEASE, (STEP_DOWN_BAR_LEASES * lease_s, node)).fetchone()
    if row is None or not row[1]:
        return None
    standbys = [r[0] for r in conn.execute(_STANDBYS, (LEASE_APP, LEASE_APP, LEASE_APP, node)).fetchall()]
    return int(row[0]), standbys


def main(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    url = settings.url_or(args.database_url)
    node = args.node or settings.node
    with psycopg.connect(url, autocommit=True, application_name="ig-collector step-down") as conn:
        done = step_down(conn, node, settings.lease_s)
        if done is None:
            print(f"ig-collector step-down: {node} does not lead; {leader_line(conn, dt.datetime.now(dt.UTC))}",
                  file=sys.stderr)  # fmt: skip
            return 1
    epoch, standbys = done
    who = ", ".join(standbys) if standbys else "no standby is connected now: the first collector to start"
    bar = STEP_DOWN_BAR_LEASES * settings.lease_s
    print(f"{node} stepped down (epoch {epoch}); may take over: {who} ({node} may not lead again for {bar:.0f} s)")
    return 0
