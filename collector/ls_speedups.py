"""Take a stack capture off lightstreamer-client-lib's per-update path.

The library (1.0.3, the version IG's TLCP 2.4.0 servers accept) is Haxe compiled to Python. Its
iterator wrapper ends every loop by catching `StopIteration` through `haxe_Exception.caught`,
whose constructor records the Python stack with `traceback.extract_tb`: per frame a code-position
walk and a `linecache.checkcache` (an `os.stat`). An update runs five such loops (field diff,
apply, JSON-patch check, map copy, and one per `getValue(name)`), so at 2,000 ticks/s the
library's thread was spending 500 us a tick, 0.9 of a core, and the GIL it held starved our own
threads: in the soak a Lightstreamer backlog of 27,000 undelivered updates took RSS past 150 MB.

Two patches, both behaviour-preserving:
- `python_HaxeIterator.hasNext` catches `StopIteration` itself (as the generated code means to);
  any other exception still propagates unchanged;
- `haxe_NativeStackTrace.exceptionStack` records (file, line, function) per frame without reading
  source files, so exceptions the library catches for real stay cheap and keep their stack.

Patched once, at first use of the stream client; a library whose code no longer has the shape
these were written for is left alone (logged), since a blind patch there could change behaviour.
"""

from __future__ import annotations

import logging
import sys
import traceback
from types import ModuleType
from typing import Any

log = logging.getLogger("collector.ls_speedups")

_MARK = "_ig_collector_patched"


def _has_next(self: Any) -> bool:
    if not self.checked:
        try:
            self.x = self.it.__next__()
            self.has = True
        except StopIteration:
            self.has = False
            self.x = None
        self.checked = True
    return self.has


def _exception_stack() -> list[traceback.FrameSummary]:
    tb = sys.exc_info()[2]
    frames: list[traceback.FrameSummary] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append(traceback.FrameSummary(code.co_filename, tb.tb_lineno, code.co_name, lookup_line=False))
        tb = tb.tb_next
    frames.reverse()  # innermost first, as the library's own version returns them
    return frames


def _expected_shape(haxe: ModuleType) -> str | None:
    """Why the library does not look like 1.0.3 here, or None when it does."""
    iterator = getattr(haxe, "python_HaxeIterator", None)
    stack = getattr(haxe, "haxe_NativeStackTrace", None)
    if iterator is None or stack is None:
        return "python_HaxeIterator or haxe_NativeStackTrace is gone"
    has_next = getattr(iterator.hasNext, "__code__", None)
    if has_next is None or "caught" not in has_next.co_names or "StopIteration" not in has_next.co_names:
        return "python_HaxeIterator.hasNext no longer catches StopIteration through haxe_Exception.caught"
    exception_stack = getattr(stack.exceptionStack, "__code__", None)
    if exception_stack is None or "extract_tb" not in exception_stack.co_names:
        return "haxe_NativeStackTrace.exceptionStack no longer calls traceback.extract_tb"
    return None


def apply() -> bool:
    """Patch the library once per process; True when the patches are (now or already) in place.

    Called for every new stream client; the outcome is kept on the library module, so a changed
    library is warned about once, not at every reconnect."""
    from lightstreamer.client import ls_python_client_haxe as haxe

    done = getattr(haxe, _MARK, None)
    if done is not None:
        return bool(done)
    why = _expected_shape(haxe)
    if why is not None:
        log.warning("lightstreamer-client-lib changed; its per-update speed-ups are not applied", extra={"why": why})
        setattr(haxe, _MARK, False)
        return False
    haxe.python_HaxeIterator.hasNext = _has_next
    haxe.haxe_NativeStackTrace.exceptionStack = staticmethod(_exception_stack)
    setattr(haxe, _MARK, True)
    return True
