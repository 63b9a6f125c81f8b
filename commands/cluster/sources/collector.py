"""Pausing Python's cyclic garbage collector while a large file is decoded.

Decoding 100,000 pods builds millions of dicts and lists; each few hundred new containers start a collection, and
the older generations are walked again and again as the heap grows, so the collector cost five times the decoding
itself (10 s of CPU against 2 s for the ten files of bench/bench_analyze_files.py).  Decoded JSON holds no reference
cycles, and any made meanwhile (a recursive YAML alias, the parser's own state) is collected once the pause ends, so
nothing is lost but the wasted walks.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the block; nested or concurrent pauses restore the collector once, at the end."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
