"""PostgreSQL's binary COPY format for ticks, built and read column-wise with numpy.

A Python object per row would cost more than the database's own work at the writer's
throughput bar, so rows are laid out as structured big-endian arrays: one array per row shape
(with or without a receive time), no Python per row either way.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..models import RecentTicks

EPOCH_2000_MS = 946_684_800_000  # PostgreSQL's binary timestamps count microseconds from 2000-01-01

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)
TICK_COLUMNS = "time, pair, bid, ask, received_at"

# One row of the recent-ticks query (`resume.py`): field count, then (length, value) per column.
_RECENT_ROW = np.dtype(
    [("n", ">i2"), ("l1", ">i4"), ("code", ">i4"), ("l2", ">i4"), ("t", ">i8"),
     ("l3", ">i4"), ("b", ">f8"), ("l4", ">i4"), ("a", ">f8")]
)  # fmt: skip


class CopyFormatError(ValueError):
    """The server's COPY output is not laid out as the query asked (a bug, not an outage)."""


class TickColumns(Protocol):
    """Tick rows as columns (the write buffer's chunks)."""

    codes: np.ndarray  # int16 index into the pairs
    times: np.ndarray  # int64 epoch ms
    bids: np.ndarray
    asks: np.ndarray
    received: np.ndarray  # int64 epoch ms, -1 = NULL


class TickCodec:
    """Encodes tick columns as COPY rows for `ticks (time, pair, bid, ask, received_at)`."""

    def __init__(self, pairs: Sequence[str]) -> None:
        names = [p.encode("ascii") for p in pairs]
        if len({len(n) for n in names}) != 1:
            raise ValueError("pair names must all have the same length (six letters)")
        self.pairs = tuple(pairs)
        self._pair_bytes = np.array(names)

    def rows(self, chunk: TickColumns) -> bytes:
        """The rows only (no header or trailer), so several chunks share one COPY."""
        width = self._pair_bytes.dtype.itemsize
        parts = []
        has = chunk.received >= 0
        for with_recv in (True, False):
            sel = has if with_recv else ~has
            n = int(sel.sum())
            if not n:
                continue
            fields = [("n", ">i2"), ("l1", ">i4"), ("t", ">i8"), ("l2", ">i4"), ("p", f"S{width}"),
                      ("l3", ">i4"), ("b", ">f8"), ("l4", ">i4"), ("a", ">f8"), ("l5", ">i4")]  # fmt: skip
            if with_recv:
                fields.append(("r", ">i8"))
            rows = np.empty(n, dtype=np.dtype(fields))
            rows["n"] = 5
            rows["l1"], rows["l2"], rows["l3"], rows["l4"] = 8, width, 8, 8
            rows["t"] = (chunk.times[sel] - EPOCH_2000_MS) * 1000
            rows["p"] = self._pair_bytes[chunk.codes[sel]]
            rows["b"] = chunk.bids[sel]
            rows["a"] = chunk.asks[sel]
            if with_recv:
                rows["l5"] = 8
                rows["r"] = (chunk.received[sel] - EPOCH_2000_MS) * 1000
            else:
                rows["l5"] = -1
            parts.append(rows.tobytes())
        return b"".join(parts)

    def payload(self, chunks: Sequence[TickColumns]) -> list[bytes]:
        """A whole COPY stream: header, every chunk's rows, trailer."""
        return [COPY_HEADER, *(self.rows(c) for c in chunks), COPY_TRAILER]


def decode_recent_ticks(data: bytes, pairs: Sequence[str]) -> RecentTicks:
    """The recent-ticks query's binary output: (int4 pair index, int8 ms, float8 bid, float8 ask)."""
    body = data[len(COPY_HEADER) : len(data) - len(COPY_TRAILER)]
    if not data.startswith(COPY_HEADER) or len(body) % _RECENT_ROW.itemsize:
        raise CopyFormatError(f"unexpected COPY output for recent ticks ({len(data)} bytes)")
    rows = np.frombuffer(body, dtype=_RECENT_ROW)
    if len(rows) and not (
        (rows["n"] == 4).all() and (rows["l1"] == 4).all() and (rows["l2"] == 8).all()
        and (rows["l3"] == 8).all() and (rows["l4"] == 8).all()
    ):  # fmt: skip
        raise CopyFormatError("unexpected field layout in COPY output for recent ticks")
    return RecentTicks(
        tuple(pairs),
        rows["code"].astype(np.int32),
        rows["t"].astype(np.int64),
        rows["b"].astype(np.float64),
        rows["a"].astype(np.float64),
    )
