"""Whether a stack's slices fit in this machine's memory, judged from what its files declare.

A file's header can declare any size; reading the first slice of a 100000 x 100000 image
would grow to gigabytes before failing. The readers ask here first, before decoding.
"""
from __future__ import annotations

import os

try:
    import resource
except ImportError:  # not on Windows: no address-space limit to respect
    resource = None  # type: ignore[assignment]

import numpy as np

from fusion.errors import StackTooLargeError

# Bytes per pixel the streaming engine keeps besides the slice: running maps (best measure,
# chosen slice, weight sum), the grayscale copy, the focus map and its temporaries.
ENGINE_BYTES_PER_PIXEL = 40
# Per sample: the slice as read and converted, the picked pixels, and the float32 running sum.
ENGINE_BYTES_PER_SAMPLE = 8


def bytes_to_fuse(pixels: int, samples: int, dtype: np.dtype) -> int:
    """About how much memory fusing slices of ``pixels`` (H*W) x ``samples`` (channels) takes."""
    itemsize = np.dtype(dtype).itemsize
    return pixels * ENGINE_BYTES_PER_PIXEL + pixels * samples * (2 * itemsize + ENGINE_BYTES_PER_SAMPLE)


def available_memory_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, or less under an address-space limit."""
    available = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0] if resource is not None else None
    if limit is not None and limit != resource.RLIM_INFINITY:
        available = limit if available is None else min(available, limit)
    return available


def check_fits_in_memory(height: int, width: int, samples: int, dtype, path, label: str = "slice 0") -> None:
    """Raise StackTooLargeError when fusing slices of this declared size would not fit in memory."""
    needed = bytes_to_fuse(height * width, samples, dtype)
    available = available_memory_bytes()
    if available is None or needed <= available:
        return
    raise StackTooLargeError(
        f"{label} declares {height} x {width} pixels x {samples} of {np.dtype(dtype)}: fusing it needs about "
        f"{size_said(needed)} of memory and {size_said(available)} is available; crop or bin the stack first", path)


def size_said(n_bytes: int) -> str:
    """A size for people: GB with one decimal; below a tenth of a GB, MB ("0.0 GB" would say nothing), and below a
    tenth of a MB, kB."""
    if n_bytes >= 1e8:
        return f"{n_bytes / 1e9:.1f} GB"
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:.0f} kB"
