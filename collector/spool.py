"""Repair flags a stop could not commit, kept on local disk until the next start commits them.

A flag must outlive the process that raised it. The writer commits flags with the candles they
concern, so at a crash the database holds either the flag or a state the next start re-derives
it from (the gap after the last committed tick; an incomplete row past its close). A graceful
stop while the database is away is the one case where neither holds for every flag (a bucket
flagged for lost updates may lie before the last committed tick), so the stop writes what it
could not commit here, atomically, and the next start commits it before streaming.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import psycopg

from .models import CoverageMark, Flag
from .store import write_coverage, write_flags

FILE_NAME = "unwritten-flags.json"


class FlagSpool:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME

    def save(self, flags: list[Flag], marks: list[CoverageMark]) -> Path:
        """Write atomically (temp file, fsync, rename), readable by the collector's user only;
        merged with anything already spooled by an earlier stop."""
        old_flags, old_marks = self.load()
        data = {
            "flags": [[f.pair, f.timeframe, f.bucket_ms, f.reason] for f in [*old_flags, *flags]],
            "coverage": [[m.up, m.at_ms, m.reason] for m in [*old_marks, *marks]],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        return self.path

    def load(self) -> tuple[list[Flag], list[CoverageMark]]:
        """What is spooled; a file that cannot be read is an error (never silently skipped)."""
        if not self.path.exists():
            return [], []
        data: dict[str, Any] = json.loads(self.path.read_text())
        flags = [Flag(str(p), str(tf), int(b), str(r)) for p, tf, b, r in data.get("flags", [])]
        marks = [CoverageMark(bool(u), int(t), r) for u, t, r in data.get("coverage", [])]
        return flags, marks

    def commit(self, conn: psycopg.Connection, origin: str) -> int:
        """Write what is spooled on `conn` (inside the caller's transaction); call `clear()`
        once that transaction has committed. Returns the flags written."""
        flags, marks = self.load()
        write_flags(conn, flags)
        write_coverage(conn, marks, origin)
        return len(flags)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
