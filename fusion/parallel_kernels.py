"""Parallel numba kernels, called one at a time where numba's threading layer cannot run two at once.

Under TBB (``fusion/numba_layer.py``) two threads may run parallel kernels at once. Under OpenMP that crashed the
process now and then (a segmentation fault; numba issue 10614), and under workqueue numba aborts it ("Concurrent
access has been detected"). Threads of one process do run kernels beside each other beyond what one engine runs in
turn (``fusion/overlap.py``): a simulated camera renders on the acquisition thread while the fusion worker folds,
and each stack of an MDA has a fusion worker of its own. So every parallel kernel is wrapped in ``one_at_a_time``:
a lock for the whole process where the layer is not TBB (macOS, Linux on ARM, ``NUMBA_THREADING_LAYER=omp``),
nothing where it is.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numba

K = TypeVar("K", bound=Callable[..., Any])

# numba's threading layers under which two threads may run parallel kernels at once: TBB, made for it (a dependency
# where wheels exist; fusion/numba_layer.py lets numba find it).
CONCURRENT_LAYERS = ("tbb",)

_ONE_KERNEL_AT_A_TIME = threading.RLock()
_concurrent: bool | None = None   # whether the layer is one of CONCURRENT_LAYERS, once numba has chosen it


def kernels_may_run_concurrently() -> bool:
    """Whether numba's threading layer lets two threads run parallel kernels at once (``CONCURRENT_LAYERS``)."""
    global _concurrent
    if _concurrent is None:
        numba.get_num_threads()  # numba chooses its layer on first use (this is one), without running a kernel
        _concurrent = numba.threading_layer() in CONCURRENT_LAYERS
    return _concurrent


def one_at_a_time(kernel: K) -> K:
    """``kernel`` (a parallel numba dispatcher), called under the process's kernel lock unless the layer lets
    kernels run concurrently. Only for kernels called from Python: numba code cannot call the wrapper."""

    @functools.wraps(kernel)
    def call(*args: Any) -> Any:
        if kernels_may_run_concurrently():
            return kernel(*args)
        with _ONE_KERNEL_AT_A_TIME:
            return kernel(*args)

    return call  # type: ignore[return-value]  # (the same signature as the kernel's)
