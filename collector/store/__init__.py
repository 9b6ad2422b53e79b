"""The database writer: ticks and candles into TimescaleDB, fast, idempotent and outage-proof.

One module, one job:

* `buffer`: what was submitted and is not yet stored (bounded, coalesced; no database in it);
* `copy_codec`: PostgreSQL's binary COPY format for ticks;
* `sql`: the statements and one flush's transactions (`write_batch`), flags and coverage;
* `resume`: what a restart continues from, read on its own connection;
* `writer`: `Writer` (buffer + connection + retry) and the `WriterThread` that drives it.
"""

from ..vocabulary import dt_to_ms, ms_to_dt
from .buffer import Batch, WriteBuffer
from .resume import ResumeState, ResumeWindow, load_state
from .sql import FlushStats, WriterError, is_permanent, write_batch, write_coverage, write_flags
from .writer import Writer, WriterThread

__all__ = [
    "Batch",
    "FlushStats",
    "ResumeState",
    "ResumeWindow",
    "WriteBuffer",
    "Writer",
    "WriterError",
    "WriterThread",
    "dt_to_ms",
    "is_permanent",
    "load_state",
    "ms_to_dt",
    "write_batch",
    "write_coverage",
    "write_flags",
]
