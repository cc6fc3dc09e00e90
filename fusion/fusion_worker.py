"""Fusion in its own thread, so that acquisition never waits for it.

Slices are handed over in a queue that holds at most ``max_slices_in_memory`` images; when
fusion falls behind, the session hands over only the slice's index and the worker reads
the slice back from the stack buffer. Order is kept either way.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from fusion.engine import StreamingFusion
from fusion.slice_store import SliceSource

_DONE = object()
QUEUE_BUDGET_BYTES = 256 * 2**20   # slices waiting for fusion in memory, all together


def slices_in_memory_for(slice_bytes: int, budget_bytes: int = QUEUE_BUDGET_BYTES) -> int:
    """How many slices of this size may wait in memory (4 at least). A camera-rate stack of small
    frames gets ahead of fusion by dozens of slices; read back from the disk they cost fusion more
    (100 slices of 640x480 at 10 ms: 40-80 read back with 4 in memory)."""
    return max(4, budget_bytes // max(int(slice_bytes), 1))


class FusionWorker:
    def __init__(self, engine: StreamingFusion, buffer: SliceSource, max_slices_in_memory: int = 4,
                 on_fused: Callable[[int, float], None] | None = None):
        """``on_fused(index, seconds)`` is called in the fusion thread after each slice is folded in."""
        self.engine = engine
        self._on_fused = on_fused
        self.buffer = buffer
        self._queue: queue.Queue = queue.Queue()
        self._in_memory = threading.Semaphore(max_slices_in_memory)
        self.fusion_s: dict[int, float] = {}
        self.read_back: list[int] = []   # slices fusion caught up on from the buffer
        self.error: BaseException | None = None
        # Held while the engine folds in a slice: a reader (the live view) that takes it sees the
        # engine between slices, never halfway through one.
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="fusion", daemon=True)
        self._thread.start()

    def submit(self, index: int, pixels: np.ndarray | None, z: float | None) -> None:
        """Hand over slice ``index`` (already in the buffer; ``pixels`` None: read it back from there); never blocks."""
        if self._in_memory.acquire(blocking=False):
            self._queue.put((index, pixels, z))
        else:
            self._queue.put((index, None, z))

    def submit_in_memory(self, index: int, pixels: np.ndarray, z: float | None) -> bool:
        """Hand over slice ``index`` with its pixels where they may wait in memory, before it is in the buffer (it
        may never be: its write may fail); False where they may not: hand it over with ``submit`` once it is there
        (the worker reads it back). Never blocks."""
        if not self._in_memory.acquire(blocking=False):
            return False
        self._queue.put((index, pixels, z))
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            index, pixels, z = item
            if pixels is not None:
                self._in_memory.release()
            if self.error is not None:
                continue  # drain; the error is reported by finish()
            try:
                started = time.perf_counter()
                if pixels is None:
                    pixels = self.buffer.read_slice(index)
                    self.read_back.append(index)
                with self.lock:
                    self.engine.push(pixels, z)
                self.fusion_s[index] = time.perf_counter() - started
                if self._on_fused is not None:
                    self._on_fused(index, self.fusion_s[index])
            except BaseException as error:  # reported to the session, which still saves the stack
                self.error = error

    def finish(self, timeout_s: float = 120.0) -> None:
        """Wait until every submitted slice is fused; raise what went wrong in the thread."""
        self._queue.put(_DONE)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"fusion did not catch up within {timeout_s:g} s")
        if self.error is not None:
            raise self.error
