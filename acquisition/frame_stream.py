"""A camera free-running in its own thread, its frames handed over through a queue with deadlines."""
from __future__ import annotations

import queue
import threading
import time

from devices.camera import Frame, frame_wait_s
from devices.errors import DeviceError, DeviceTimeoutError

_ENDED = object()

# Frames waiting for the caller, at most (fewer where they would pass QUEUED_BYTES_AT_MOST); older ones are discarded.
# A caller waiting for a frame takes each as it comes; frames pile up only while it is away, and those are old.
QUEUED_FRAMES_AT_MOST = 20
QUEUED_BYTES_AT_MOST = 256 * 2**20


class FrameStream:
    """``camera.sequence(max_frames)`` in a thread; ``next_frame`` waits for the next frame until a deadline.

    A camera error in the thread is raised by ``next_frame``, once; the next call starts the camera
    streaming again (a camera's ``sequence`` ends at its first error, as a GenICam driver's fetch
    timeout or a simulator's fault ends it), so a caller that retries gets frames again and one gap
    never ends the stream. ``restarts`` counts those new starts. ``close`` stops the camera after its
    current frame. Use as a context manager.

    ``max_frames`` bounds the frames handed to the caller, not the camera's memory use: while the caller
    is away (storing a slice) the stream keeps the newest QUEUED_FRAMES_AT_MOST frames and discards the
    older ones (counted in ``discarded``). A camera run cut short by that (or by frames the camera
    dropped) is started again for the frames still allowed; ``bound`` says in the error what set the
    bound, once it is spent.
    """

    def __init__(self, camera, max_frames: int, frame_timeout_s: float, bound: str = ""):
        self.camera = camera
        self.max_frames = max_frames
        self.frame_timeout_s = frame_timeout_s
        self.bound = bound
        self.frames_delivered = 0
        self.restarts = 0
        self.discarded = 0   # old frames dropped from a full queue while the caller was away
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._failed = False   # the camera's sequence ended with an error, already raised to the caller
        self._thread: threading.Thread | None = None
        self._run_began_at = (0, 0)   # (frames_delivered, discarded) as the camera's current run began

    def __enter__(self) -> FrameStream:
        self._start(self.max_frames)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self, max_frames: int) -> None:
        self._run_began_at = (self.frames_delivered, self.discarded)
        self._thread = threading.Thread(target=self._run, args=(max_frames,), name="frame stream", daemon=True)
        self._thread.start()

    def _run(self, max_frames: int) -> None:
        frames = None
        try:
            frames = self.camera.sequence(max_frames, timeout_s=self.frame_timeout_s)
            for frame in frames:
                self._make_room(frame)
                self._queue.put(frame)
                if self._stop.is_set():
                    break
            self._queue.put(_ENDED)
        except BaseException as error:  # handed to the consumer, which raises it
            self._queue.put(error)
        finally:
            if frames is not None:
                frames.close()

    def _run_gave_frames(self) -> bool:
        """Whether the camera's run that just ended gave any frame (one that gave none is not started again)."""
        return (self.frames_delivered, self.discarded) != self._run_began_at

    def _make_room(self, frame: Frame) -> None:
        """Discard the oldest waiting frames so that ``frame`` makes no more than the queue holds at most."""
        size = max(1, getattr(frame.pixels, "nbytes", 1))
        at_most = max(2, min(QUEUED_FRAMES_AT_MOST, QUEUED_BYTES_AT_MOST // size))
        while self._queue.qsize() >= at_most:
            try:
                self._queue.get_nowait()   # a frame: only this thread queues anything else, and only at its end
            except queue.Empty:
                return
            self.discarded += 1

    def _restart(self) -> None:
        """Start the camera streaming again after its sequence ended with an error."""
        self._join()  # the old sequence stops its camera (its generator closes) before a new one starts
        if self._thread is not None and self._thread.is_alive():
            raise DeviceTimeoutError(self.camera.name, "its stream did not stop after an error, so it cannot be "
                                                       "started again")
        self._failed = False
        self.restarts += 1
        self._start(max(1, self.max_frames - self.frames_delivered))

    def next_frame(self, timeout_s: float) -> Frame | None:
        """The next frame; None when none comes within ``timeout_s`` (the caller says what it waited for)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if self._failed:
                self._restart()
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if item is _ENDED and self.frames_delivered < self.max_frames and self._run_gave_frames():
                # The camera's run ended short of the bound (frames discarded or dropped): the rest come from a new one.
                self._join()
                self._start(self.max_frames - self.frames_delivered)
                continue
            if item is _ENDED:
                self._queue.put(_ENDED)
                # Not transient: the bound on the stream's length is spent, and a retry would not lift it.
                bound = f" ({self.bound})" if self.bound else ""
                raise DeviceError(self.camera.name, f"the stream ended after {self.frames_delivered} frames, all "
                                                   f"it was allowed{bound}")
            if isinstance(item, BaseException):
                self._failed = True
                raise item
            self.frames_delivered += 1
            return item

    def _join(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            # The camera's own wait for its current frame (devices.camera.frame_wait_s) ends before this.
            self._thread.join(frame_wait_s(self.frame_timeout_s, self.camera.exposure_ms) + 1.0)

    def close(self) -> None:
        self._stop.set()
        self._join()
