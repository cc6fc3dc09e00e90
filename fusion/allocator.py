"""Keep freed memory in the process instead of handing it back to the kernel after every slice.

Fusing a 5 MP slice makes a few dozen temporaries of 20-60 MB. With glibc's defaults the heap
is trimmed (or the block unmapped) when each is freed, so the next slice's temporaries fault
every page in again: on the scorpion stack that was 4-5 s of system time in a 13 s refusion.
Raising the trim threshold and padding the heap lets the same pages serve every slice; one
arena for all threads keeps the idle share small. The process keeps its peak until exit.

Process-wide, so only entry points call it (``run_session.py``, the dask workers of a batch
refusion); a library user may call it too. A no-op where the C library is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
TRIM_THRESHOLD_BYTES = 1 << 30   # give memory back only past 1 GiB of free heap top
TOP_PAD_BYTES = 256 << 20        # grow the heap in 256 MiB steps
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest: blocks up to 32 MiB come from the reused heap
# One heap for all threads: the read-ahead thread's decoded slices are freed by the fusing thread,
# and per-thread arenas would each keep their own idle share (scorpion: 80 MB more at the peak).
# Fusion allocates a few dozen large blocks per slice, so the shared lock costs nothing measurable.
ARENAS = 1


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's malloc as described above; True when it was applied."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        (_M_TOP_PAD, TOP_PAD_BYTES), (_M_ARENA_MAX, ARENAS)))
