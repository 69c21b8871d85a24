"""The CPU heap during a run: freed memory stays in the process for the next step (glibc).

Every optimisation step allocates and frees the same activations and gradients (at 512 px the
first layers' are 50 MB each). glibc serves blocks that large with ``mmap`` (above its mmap
threshold, at most 32 MB) and unmaps them when freed, so every step writes to fresh pages that
the kernel must fault in and zero: about 100 000 page faults per step at 512 px. While a CPU
run lasts, ``reuse_freed_memory`` serves every allocation from the heap and never trims it, so
each step reuses the pages the last one freed (no faults after the first step). Measured on a
2-core Xeon in alternating in-process pairs (benchmarks/README.md, "The heap kept during a CPU
run"), a step takes a median 0.95x the time at 512 px and 0.89x at 1024 px. The price is a
higher peak, as a freed block too small for the next request stays in the heap unused: +7 % at
512 px, +26 % at 768-1024 px, which the memory model (``memory.BYTES_PER_PIXEL``) is measured
with. Transparent huge pages for torch's blocks instead (``THP_MEM_ALLOC_ENABLE=1``: a fault
per 2 MiB) were slower at 1024 px: 6.8-7.9 s per step against 5.0-5.9 s with glibc's defaults
and 4.5-4.9 s with this.

When the last run ends, glibc's settings are restored (all but its self-adjusting mmap
threshold, which these ``mallopt`` calls turn off: it stays where it was, at most 32 MB) and the
free heap goes back to the kernel (``malloc_trim``): an idle warm engine holds less than with
glibc's defaults, and the next run's memory budget (``memory.budget``, from the RAM available)
counts nothing freed as used. Only glibc has these switches; elsewhere (macOS, Windows, musl)
this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from typing import Iterator

# mallopt parameters (glibc's malloc.h) and the defaults they are restored to.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
#: Never trim during a run: mallopt takes an int.
_NO_TRIM = 2**31 - 1

_lock = threading.Lock()
_runs = 0


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        # gnu_get_libc_version: only glibc has it (musl has a mallopt that does nothing).
        for name in ("gnu_get_libc_version", "mallopt", "malloc_trim"):
            getattr(libc, name)
        return libc
    except (OSError, AttributeError, TypeError):
        return None


_libc = _glibc()


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[None]:
    """Keep freed memory for reuse while the block runs (nested and concurrent runs count:
    glibc's settings are restored when the last one ends)."""
    global _runs
    if not enabled or _libc is None:
        yield
        return
    with _lock:
        _runs += 1
        if _runs == 1:
            _libc.mallopt(_M_MMAP_MAX, 0)
            _libc.mallopt(_M_TRIM_THRESHOLD, _NO_TRIM)
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0:
                _libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                _libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                _libc.malloc_trim(0)
