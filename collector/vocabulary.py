"""The schema's vocabulary, owned here and nowhere else.

Every word the collector, the bot, the audit and the metrics share with the database lives in
this module: the NOTIFY channel and its payload, the candle kinds, the stream states, the
reasons a bucket is owed a repair and how a repair ends, why the stream stopped covering the
market, and the exact conversions between IG's epoch milliseconds and the database's
`timestamptz`. A word is typed once; a typo elsewhere is an `AttributeError`, not a silent
new label or a row the database refuses (docs/design.md, "Vocabulary").

The string enums compare equal to their values, so rows and labels read back from the database
or from JSON are used as they are.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from typing import NamedTuple

UTC = dt.UTC
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_MS = dt.timedelta(milliseconds=1)


def ms_to_dt(ms: int) -> dt.datetime:
    """Exact: integer arithmetic on a timedelta, never a float `fromtimestamp`, so a
    millisecond survives a round trip for any date the schema can hold."""
    return _EPOCH + dt.timedelta(milliseconds=ms)


def dt_to_ms(d: dt.datetime) -> int:
    """Exact inverse of `ms_to_dt` (floors sub-millisecond parts). A naive datetime is refused:
    in this project every time is UTC and a naive one is a bug upstream."""
    return (d - _EPOCH) // _MS


# ---------------------------------------------------------------------------------------------
# NOTIFY: how the bot hears about a closed candle without polling.

NOTIFY_CHANNEL = "candle_closed"


class ClosedNotice(NamedTuple):
    pair: str
    timeframe: str
    bucket_ms: int


def encode_notice(pair: str, timeframe: str, bucket_ms: int) -> str:
    """`{"pair": "EURUSD", "timeframe": "15m", "bucket": "2024-03-08T10:00:00+00:00"}`: the
    contract the bot and any other LISTENer read (docs/design.md, "Data contracts")."""
    return json.dumps({"pair": pair, "timeframe": timeframe, "bucket": ms_to_dt(bucket_ms).isoformat()})


def decode_notice(payload: str) -> ClosedNotice:
    """Raises ValueError (json.JSONDecodeError is one) or KeyError on a payload not of ours."""
    d = json.loads(payload)
    return ClosedNotice(str(d["pair"]), str(d["timeframe"]), dt_to_ms(dt.datetime.fromisoformat(d["bucket"])))


# ---------------------------------------------------------------------------------------------
# Candles.


class CandleKind(enum.StrEnum):
    """What a candle write is: a forming candle's latest state, a close, a correction of a
    closed one by a late tick, or a candle bought from REST. The metrics' `kind` label."""

    FORMING = "forming"
    CLOSED = "closed"
    CORRECTION = "correction"
    REST = "rest"


STREAM_KINDS: tuple[CandleKind, ...] = (CandleKind.FORMING, CandleKind.CLOSED, CandleKind.CORRECTION)


class CandleSource(enum.StrEnum):
    """`candles.source` (CHECK in sql/003 and sql/011)."""

    STREAM = "stream"
    REST = "rest"
    IMPORT = "import"


# ---------------------------------------------------------------------------------------------
# Repairs: why a bucket is owed one (`candle_repairs.reason`) and how it ended (`resolution`).


class FlagReason(enum.StrEnum):
    FIRST_START = "first_start"  # the bucket the first start began in was seen only in part
    STREAM_GAP = "stream_gap"  # between the last tick before an outage and the first after it
    LOST_UPDATES = "lost_updates"  # the server dropped updates (Lightstreamer OV)
    QUEUE_OVERFLOW = "queue_overflow"  # our own update queue overflowed
    CONSUMER_ERROR = "consumer_error"  # the consumer raised on a batch
    LATE_TICK = "late_tick"  # a tick arrived after its bucket could still be corrected
    INCOMPLETE_AT_START = "incomplete_at_start"  # found incomplete, unflagged, at start
    QUARANTINED = "quarantined"  # the database refused the stream's candle for good
    BACKFILL = "backfill"  # `ig-collector backfill` found the bucket missing


class Resolution(enum.StrEnum):
    REST = "rest"  # replaced by IG's candle
    COMPOSED = "composed"  # built from complete finer candles, no REST spent
    EMPTY = "empty"  # REST has no candle: nothing traded
    UNRECOVERABLE = "unrecoverable"  # given up (no backfill for it, or REST cannot serve it)


# Resolutions that replaced the stream's candle: a new flag re-opens one only for a late tick.
REPLACING: tuple[Resolution, ...] = (Resolution.REST, Resolution.COMPOSED)


# ---------------------------------------------------------------------------------------------
# Stream coverage (`stream_coverage.end_reason`) and the stream's state.


class CoverageEnd(enum.StrEnum):
    OUTAGE = "outage"
    STOPPED = "stopped"
    CRASHED = "crashed"


class StreamState(enum.StrEnum):
    """The supervisor's view of the stream: the `status` label of `ig_collector_stream_status`."""

    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    STALLED = "STALLED"
    DISCONNECTED = "DISCONNECTED"
    RETRYING = "RETRYING"
    LOGGING_IN = "LOGGING_IN"
    STOPPED = "STOPPED"


class Transport(enum.StrEnum):
    """Lightstreamer's transports, as its status names them (`CONNECTED:WS-STREAMING`)."""

    WS_STREAMING = "WS-STREAMING"
    HTTP_STREAMING = "HTTP-STREAMING"
    WS_POLLING = "WS-POLLING"
    HTTP_POLLING = "HTTP-POLLING"


# Lightstreamer client statuses the supervisor acts on.
LS_CONNECTED_PREFIX = "CONNECTED:"
LS_DISCONNECTED = "DISCONNECTED"
LS_WILL_RETRY = "DISCONNECTED:WILL-RETRY"
LS_STREAMING: tuple[str, ...] = tuple(LS_CONNECTED_PREFIX + t for t in Transport)


class QuarantineKind(enum.StrEnum):
    """`quarantine.kind` (CHECK in sql/009)."""

    TICK = "tick"
    CANDLE = "candle"
    REPAIR = "repair"
    COVERAGE = "coverage"


class TickGapReason(enum.StrEnum):
    """`tick_gaps.reason` (CHECK in sql/009): ticks the stream saw and the database never got."""

    BUFFER_FULL = "buffer_full"
    QUARANTINED = "quarantined"


# ---------------------------------------------------------------------------------------------
# daemon: the supervisor's words, the metrics' label values (byte-identical to the dashboards).


class UpdateLoss(enum.StrEnum):
    """Why stream updates never reached the aggregator (`ig_collector_updates_lost_total`)."""

    SERVER_DROPPED = "server_dropped"  # Lightstreamer OV: the server dropped them
    QUEUE_FULL = "queue_full"  # our own update queue was at its bound


class LateOutcome(enum.StrEnum):
    """What became of a tick for an already closed bucket (`ig_collector_late_ticks_total`)."""

    CORRECTED = "corrected"
    DROPPED = "dropped"


class ReconnectCause(enum.StrEnum):
    """Why the supervisor started a reconnect (`ig_collector_stream_reconnects_total`)."""

    SERVER_ERROR = "server_error"
    SERVER_END = "server_end"
    STALE = "stale"
    TOKEN = "token"
    LOGIN_FAILED = "login_failed"
    STARTUP = "startup"


class LoginResult(enum.StrEnum):
    """`ig_collector_logins_total{result}`."""

    OK = "ok"
    REFUSED = "refused"  # credentials or API key refused: retrying will not help
    ERROR = "error"  # IG or the network failed: the next attempt may work
