"""Reading a saved stack's next slices on another thread while the engine fuses this one.

Decoding a 5 MP PNG or JPEG costs about as much as fusing it; overlapped, a refusion is bound
by whichever is slower instead of by their sum. At most ``depth`` decoded slices wait in memory.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

_POLL_S = 0.1  # how often a blocked reader looks whether the consumer has gone


def read_ahead(read_slice: Callable[[int], np.ndarray], n_slices: int,
               depth: int = 2) -> Iterator[tuple[int, np.ndarray, float]]:
    """Yield (index, pixels, seconds spent reading it) for every slice, in order.

    An error while reading is raised here, at the slice it concerns; a consumer that stops
    early (an error of its own, Ctrl-C) stops the reader too.
    """
    slots: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        for index in range(n_slices):
            started = time.perf_counter()
            try:
                pixels = read_slice(index)
            except BaseException as error:  # handed to the consumer, which raises it
                put((index, error, 0.0))
                return
            if not put((index, pixels, time.perf_counter() - started)):
                return

    thread = threading.Thread(target=reader, name="read-ahead", daemon=True)
    thread.start()
    try:
        for _ in range(n_slices):
            # Yielded without a name in this frame: a slice is not kept alive here while the next is read.
            yield _raising(slots.get())
    finally:
        stop.set()
        thread.join()


def _raising(item: tuple[int, np.ndarray | BaseException, float]) -> tuple[int, np.ndarray, float]:
    """The reader's (index, pixels, seconds); its error, raised, where reading failed."""
    index, pixels, seconds = item
    if isinstance(pixels, BaseException):
        raise pixels
    return index, pixels, seconds
