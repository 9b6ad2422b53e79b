"""The soak's `--probe`: a collector process reports its own memory figures every 30 s.

RSS alone cannot tell a leak from an allocator keeping freed pages, or from a backlog inside a
library. This logs, as JSON lines to $MEMPROBE_OUT, glibc's `mallinfo2` (heap in use, heap in
free chunks), Python's live objects by type, and each `malloc_trim` the daemon makes (how long,
how much RSS it returned). Loaded through PYTHONPATH by the soak, only into `collector.cli run`; diagnostic
only, never in production.
"""

import collections
import ctypes
import gc
import json
import os
import sys
import threading
import time


# Not tests.e2e.harness.rss_mb: this runs inside the measured collector, where importing the test
# harness (and its psycopg, numpy, simulator imports) would change the figures it reports.
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


_MALLINFO2 = (
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",  # bytes in use
    "fordblks",  # bytes in free chunks: resident until malloc_trim gives their pages back
    "keepcost",
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in _MALLINFO2]


def _probe(out: str) -> None:
    time.sleep(2)  # the daemon module is imported by then
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) != "collector.cli" or sys.argv[1:2] != ["run"]:
        return
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    trims: list[tuple[float, float]] = []
    daemon = sys.modules.get("collector.daemon")
    if daemon is not None and hasattr(daemon, "_release_freed_memory"):
        release = daemon._release_freed_memory

        def timed_release() -> None:
            before, t = _rss_mb(), time.perf_counter()
            release()
            trims.append((round((time.perf_counter() - t) * 1000, 2), round(before - _rss_mb(), 1)))

        daemon._release_freed_memory = timed_release
    t0 = time.monotonic()
    while True:
        mi = libc.mallinfo2()
        objects = gc.get_objects()
        by_type = collections.Counter(type(o).__name__ for o in objects)
        record = {
            "pid": os.getpid(),
            "t": round(time.monotonic() - t0),
            "rss": round(_rss_mb(), 1),
            "heap_in_use": round(mi.uordblks / 2**20, 1),
            "heap_free": round(mi.fordblks / 2**20, 1),
            "objects": len(objects),
            "top": by_type.most_common(15),
            "trims": trims[-2:],
            "n_trims": len(trims),
            "max_trim_ms": max((ms for ms, _ in trims), default=0.0),
        }
        del objects
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        time.sleep(30)


if os.environ.get("MEMPROBE_OUT"):
    threading.Thread(target=_probe, args=(os.environ["MEMPROBE_OUT"],), daemon=True, name="memprobe").start()
