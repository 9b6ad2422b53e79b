"""Faults between the collector's own threads, injected into a real `ig-collector run` process.

Loaded only by the fault suite, through PYTHONPATH, into the collector it starts; the installed
package has no such hook. It wraps the pipeline's batch entry (what the consumer thread calls for
every drained batch) and obeys files in $FAULT_INJECT_DIR:

- `raise`: the next batch raises RuntimeError (the file is removed): an exception mid-batch,
  after the updates left the queue;
- `slow`: while it exists, every batch sleeps its contents (seconds per update) first: a consumer
  far slower than the stream, so the queue overflows at its bound.
"""

import os
import time
from pathlib import Path

_DIR = os.environ.get("FAULT_INJECT_DIR")

if _DIR:
    from collector import pipeline as _pipeline

    _original = _pipeline.Pipeline.feed_batch
    _control = Path(_DIR)

    def _feed_batch(self, pairs, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise_file, slow_file = _control / "raise", _control / "slow"
        if raise_file.exists():
            raise_file.unlink()
            raise RuntimeError("injected fault: the consumer's batch failed")
        if slow_file.exists():
            try:
                per_update = float(slow_file.read_text() or 0)
            except (OSError, ValueError):
                per_update = 0.0
            time.sleep(min(5.0, per_update * len(pairs)))
        return _original(self, pairs, *args, **kwargs)

    _pipeline.Pipeline.feed_batch = _feed_batch
